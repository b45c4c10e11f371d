"""The building blocks of generated sample projects: module themes made of functions, their tests, and bugs.

Each `Snippet` is one correct function (or small class) with its docstring, the pytest tests that exercise it,
and one `bug`: a `(correct, broken)` pair of stripped source lines. `correct` occurs exactly once in `source`;
planting the bug swaps it for `broken` and appends the simulator's marker `# sim-fix: <correct>` (the contract
in `sidecar/sim/agent.py`), so the tests of that snippet fail until the line is restored.

Sources use `{pkg}` and `{mod}` placeholders only in tests (the import line); sources themselves are plain code.
Sizes are chosen to be realistic for a small library: a module of 6-8 functions is 150-260 lines.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Snippet:
    name: str
    source: str
    tests: str
    bug: tuple[str, str]


@dataclass(frozen=True, slots=True)
class Theme:
    """One module: its name, docstring, imports, and the snippets it may hold."""

    module: str
    doc: str
    imports: tuple[str, ...]
    snippets: tuple[Snippet, ...]


TEXT = Theme(
    module="text",
    doc="Text helpers: slugs, word counts, truncation and simple normalisation used across the package.",
    imports=("import re", "import unicodedata"),
    snippets=(
        Snippet(
            "slugify",
            '''def slugify(text, separator="-"):
    """Turn a title into a URL slug.

    Accents are folded to ASCII, everything that is not a letter or digit becomes the separator, runs of
    separators collapse into one, and the result is lower case without leading or trailing separators.

    >>> slugify("Hello, World!")
    'hello-world'
    """
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    cleaned = re.sub(r"[^A-Za-z0-9]+", separator, folded)
    return cleaned.strip(separator).lower()
''',
            """def test_slugify_basic():
    assert slugify("Hello, World!") == "hello-world"


def test_slugify_accents_and_separator():
    assert slugify("Crème Brûlée recipe", separator="_") == "creme_brulee_recipe"
""",
            ("return cleaned.strip(separator).lower()", "return cleaned.strip(separator)"),
        ),
        Snippet(
            "word_count",
            '''def word_count(text):
    """Count words, where a word is a run of letters, digits or apostrophes.

    Punctuation and whitespace separate words; an empty or blank text has no words.
    """
    words = re.findall(r"[A-Za-z0-9']+", text)
    return len(words)
''',
            """def test_word_count():
    assert word_count("It's a small world, isn't it?") == 6


def test_word_count_blank():
    assert word_count("   ") == 0
""",
            ("return len(words)", "return len(words) + 1"),
        ),
        Snippet(
            "truncate",
            '''def truncate(text, limit, ellipsis="..."):
    """Shorten `text` to at most `limit` characters, ending with `ellipsis` when it was cut.

    Text that already fits is returned unchanged. The ellipsis counts towards the limit, so the result is
    never longer than `limit`; a limit shorter than the ellipsis returns the ellipsis cut to the limit.
    """
    if len(text) <= limit:
        return text
    if limit <= len(ellipsis):
        return ellipsis[:limit]
    return text[: limit - len(ellipsis)] + ellipsis
''',
            """def test_truncate_fits():
    assert truncate("short", 10) == "short"


def test_truncate_cuts():
    assert truncate("abcdefghij", 8) == "abcde..."
    assert len(truncate("abcdefghij", 8)) == 8
""",
            ("return text[: limit - len(ellipsis)] + ellipsis", "return text[:limit] + ellipsis"),
        ),
        Snippet(
            "title_case",
            '''SMALL_WORDS = frozenset(
    {"a", "an", "and", "as", "at", "but", "by", "for", "in", "of", "on", "or", "the", "to"}
)


def title_case(text):
    """Title-case a heading, keeping small words lower case unless they come first.

    >>> title_case("the lord of the rings")
    'The Lord of the Rings'
    """
    words = text.split()
    result = []
    for index, word in enumerate(words):
        lower = word.lower()
        if index > 0 and lower in SMALL_WORDS:
            result.append(lower)
        else:
            result.append(lower[:1].upper() + lower[1:])
    return " ".join(result)
''',
            """def test_title_case_small_words():
    assert title_case("the lord of the rings") == "The Lord of the Rings"


def test_title_case_first_word_small():
    assert title_case("a tale of two cities") == "A Tale of Two Cities"
""",
            ("if index > 0 and lower in SMALL_WORDS:", "if lower in SMALL_WORDS:"),
        ),
        Snippet(
            "normalize_whitespace",
            '''def normalize_whitespace(text):
    """Collapse every run of whitespace (spaces, tabs, newlines) into one space and trim both ends."""
    return " ".join(text.split())
''',
            """def test_normalize_whitespace():
    assert normalize_whitespace("  a\\tb \\n\\n c  ") == "a b c"
""",
            ('return " ".join(text.split())', 'return " ".join(text.split(" "))'),
        ),
        Snippet(
            "is_palindrome",
            '''def is_palindrome(text):
    """True when `text` reads the same backwards, ignoring case and anything that is not alphanumeric."""
    letters = [ch.lower() for ch in text if ch.isalnum()]
    return letters == letters[::-1]
''',
            """def test_is_palindrome():
    assert is_palindrome("A man, a plan, a canal: Panama")
    assert not is_palindrome("palindrome")
""",
            ("letters = [ch.lower() for ch in text if ch.isalnum()]", "letters = [ch.lower() for ch in text]"),
        ),
        Snippet(
            "initials",
            '''def initials(name, limit=3):
    """The upper-case initials of a person's name, at most `limit` of them ("Ada King Lovelace" -> "AKL")."""
    parts = [part for part in re.split(r"[\\s\\-]+", name) if part]
    return "".join(part[0].upper() for part in parts[:limit])
''',
            """def test_initials():
    assert initials("Ada King Lovelace") == "AKL"


def test_initials_limit_and_hyphen():
    assert initials("jean-paul sartre", limit=2) == "JP"
""",
            (
                'return "".join(part[0].upper() for part in parts[:limit])',
                'return "".join(part[0].upper() for part in parts[1:limit])',
            ),
        ),
    ),
)

STATS = Theme(
    module="stats",
    doc="Descriptive statistics over plain lists of numbers, without third-party dependencies.",
    imports=("import math",),
    snippets=(
        Snippet(
            "mean",
            '''def mean(values):
    """Arithmetic mean of a non-empty sequence; raises ValueError on an empty one."""
    if not values:
        raise ValueError("mean of an empty sequence")
    return sum(values) / len(values)
''',
            """import pytest


def test_mean():
    assert mean([1, 2, 3, 4]) == 2.5


def test_mean_empty():
    with pytest.raises(ValueError):
        mean([])
""",
            ("return sum(values) / len(values)", "return sum(values) // len(values)"),
        ),
        Snippet(
            "median",
            '''def median(values):
    """Median of a non-empty sequence: the middle value, or the mean of the two middle values."""
    if not values:
        raise ValueError("median of an empty sequence")
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2
''',
            """def test_median_odd():
    assert median([5, 1, 3]) == 3


def test_median_even():
    assert median([4, 1, 3, 2]) == 2.5
""",
            ("ordered = sorted(values)", "ordered = list(values)"),
        ),
        Snippet(
            "variance",
            '''def variance(values, sample=True):
    """Variance of the values: the sample variance (n - 1) by default, the population variance otherwise."""
    n = len(values)
    if n < 2 and sample:
        raise ValueError("sample variance needs at least two values")
    centre = sum(values) / n
    squares = sum((v - centre) ** 2 for v in values)
    return squares / (n - 1 if sample else n)
''',
            """def test_variance_sample():
    assert variance([2, 4, 4, 4, 5, 5, 7, 9]) == 32 / 7


def test_variance_population():
    assert variance([2, 4, 4, 4, 5, 5, 7, 9], sample=False) == 4.0
""",
            ("return squares / (n - 1 if sample else n)", "return squares / n"),
        ),
        Snippet(
            "clamp",
            '''def clamp(value, low, high):
    """`value` limited to the closed range [low, high]; raises ValueError when low > high."""
    if low > high:
        raise ValueError(f"empty range [{low}, {high}]")
    return max(low, min(value, high))
''',
            """def test_clamp():
    assert clamp(5, 0, 3) == 3
    assert clamp(-1, 0, 3) == 0
    assert clamp(2, 0, 3) == 2
""",
            ("return max(low, min(value, high))", "return min(low, max(value, high))"),
        ),
        Snippet(
            "percentile",
            '''def percentile(values, p):
    """The p-th percentile (0-100) by linear interpolation between closest ranks, like numpy's default."""
    if not values:
        raise ValueError("percentile of an empty sequence")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile must be within [0, 100], got {p}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    lower = math.floor(rank)
    upper = math.ceil(rank)
    fraction = rank - lower
    return ordered[lower] + (ordered[upper] - ordered[lower]) * fraction
''',
            """def test_percentile_bounds():
    assert percentile([3, 1, 2], 0) == 1
    assert percentile([3, 1, 2], 100) == 3


def test_percentile_interpolates():
    assert percentile([1, 2, 3, 4], 50) == 2.5
""",
            ("rank = (len(ordered) - 1) * p / 100", "rank = len(ordered) * p / 100"),
        ),
        Snippet(
            "moving_average",
            '''def moving_average(values, window):
    """Means of every run of `window` consecutive values (len(values) - window + 1 of them)."""
    if window < 1:
        raise ValueError("window must be at least 1")
    averages = []
    total = sum(values[:window])
    if len(values) >= window:
        averages.append(total / window)
    for index in range(window, len(values)):
        total += values[index] - values[index - window]
        averages.append(total / window)
    return averages
''',
            """def test_moving_average():
    assert moving_average([1, 2, 3, 4, 5], 2) == [1.5, 2.5, 3.5, 4.5]


def test_moving_average_short_input():
    assert moving_average([1, 2], 3) == []
""",
            ("total += values[index] - values[index - window]", "total += values[index]"),
        ),
        Snippet(
            "normalize",
            '''def normalize(values):
    """Scale values linearly onto [0, 1]; a constant sequence maps to all zeros."""
    low, high = min(values), max(values)
    span = high - low
    if span == 0:
        return [0.0 for _ in values]
    return [(v - low) / span for v in values]
''',
            """def test_normalize():
    assert normalize([2, 4, 6]) == [0.0, 0.5, 1.0]


def test_normalize_constant():
    assert normalize([7, 7]) == [0.0, 0.0]
""",
            ("return [(v - low) / span for v in values]", "return [(v - low) / high for v in values]"),
        ),
    ),
)

INVENTORY = Theme(
    module="inventory",
    doc="A small in-memory inventory: items with quantities and prices, restocking and reports.",
    imports=("from dataclasses import dataclass, field",),
    snippets=(
        Snippet(
            "Item",
            '''@dataclass
class Item:
    """One stock-keeping unit: its code, name, unit price in cents and quantity on hand."""

    sku: str
    name: str
    price_cents: int
    quantity: int = 0

    @property
    def value_cents(self):
        """What the units on hand are worth."""
        return self.price_cents * self.quantity
''',
            """def test_item_value():
    assert Item("A1", "bolt", 25, quantity=4).value_cents == 100
""",
            ("return self.price_cents * self.quantity", "return self.price_cents + self.quantity"),
        ),
        Snippet(
            "Inventory",
            '''@dataclass
class Inventory:
    """Items by SKU. Quantities never go negative: removing more than is on hand raises ValueError."""

    items: dict = field(default_factory=dict)

    def add(self, item):
        """Add a new item, or merge its quantity into the item with the same SKU."""
        existing = self.items.get(item.sku)
        if existing is None:
            self.items[item.sku] = item
        else:
            existing.quantity += item.quantity
        return self.items[item.sku]

    def remove(self, sku, quantity):
        """Take `quantity` units of `sku` out of stock; returns the quantity left."""
        item = self.items[sku]
        if quantity > item.quantity:
            raise ValueError(f"only {item.quantity} of {sku} on hand, cannot remove {quantity}")
        item.quantity -= quantity
        return item.quantity

    def total_value_cents(self):
        """The value of everything on hand."""
        return sum(item.value_cents for item in self.items.values())

    def low_stock(self, threshold):
        """SKUs whose quantity is below `threshold`, sorted."""
        return sorted(sku for sku, item in self.items.items() if item.quantity < threshold)
''',
            """import pytest


def make_inventory():
    inventory = Inventory()
    inventory.add(Item("A1", "bolt", 25, quantity=10))
    inventory.add(Item("B2", "nut", 10, quantity=3))
    return inventory


def test_add_merges_quantities():
    inventory = make_inventory()
    inventory.add(Item("A1", "bolt", 25, quantity=5))
    assert inventory.items["A1"].quantity == 15


def test_remove_and_refuse_overdraw():
    inventory = make_inventory()
    assert inventory.remove("B2", 2) == 1
    with pytest.raises(ValueError):
        inventory.remove("B2", 2)


def test_total_value():
    assert make_inventory().total_value_cents() == 280


def test_low_stock():
    assert make_inventory().low_stock(5) == ["B2"]
""",
            ("if quantity > item.quantity:", "if quantity > item.quantity + 1:"),
        ),
        Snippet(
            "restock_plan",
            '''def restock_plan(inventory, target):
    """How many units of each SKU to order so that every item reaches `target` units (only positive orders)."""
    plan = {}
    for sku, item in sorted(inventory.items.items()):
        missing = target - item.quantity
        if missing > 0:
            plan[sku] = missing
    return plan
''',
            """def test_restock_plan():
    inventory = Inventory()
    inventory.add(Item("A1", "bolt", 25, quantity=10))
    inventory.add(Item("B2", "nut", 10, quantity=3))
    assert restock_plan(inventory, 10) == {"B2": 7}
""",
            ("if missing > 0:", "if missing >= 0:"),
        ),
        Snippet(
            "format_cents",
            '''def format_cents(cents, currency="$"):
    """Render an amount of cents as money: 123456 -> "$1,234.56"; negative amounts get a leading minus."""
    sign = "-" if cents < 0 else ""
    whole, fraction = divmod(abs(cents), 100)
    return f"{sign}{currency}{whole:,}.{fraction:02d}"
''',
            """def test_format_cents():
    assert format_cents(123456) == "$1,234.56"
    assert format_cents(-5) == "-$0.05"
""",
            ('return f"{sign}{currency}{whole:,}.{fraction:02d}"', 'return f"{sign}{currency}{whole:,}.{fraction}"'),
        ),
        Snippet(
            "parse_line",
            '''def parse_line(line):
    """Parse one CSV-like stock line `sku,name,price_cents,quantity` into an Item (whitespace is trimmed)."""
    fields = [part.strip() for part in line.split(",")]
    if len(fields) != 4:
        raise ValueError(f"expected 4 fields, got {len(fields)}: {line!r}")
    sku, name, price, quantity = fields
    return Item(sku, name, int(price), int(quantity))
''',
            """def test_parse_line():
    item = parse_line(" C3 , washer , 5 , 100 ")
    assert (item.sku, item.name, item.price_cents, item.quantity) == ("C3", "washer", 5, 100)
""",
            ("sku, name, price, quantity = fields", "sku, name, quantity, price = fields"),
        ),
    ),
)

DATES = Theme(
    module="dates",
    doc="Calendar arithmetic on (year, month, day) tuples, written out so it has no timezone surprises.",
    imports=(),
    snippets=(
        Snippet(
            "is_leap_year",
            '''def is_leap_year(year):
    """Gregorian leap years: divisible by 4, except centuries, except every fourth century."""
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
''',
            """def test_is_leap_year():
    assert is_leap_year(2024)
    assert not is_leap_year(1900)
    assert is_leap_year(2000)
""",
            (
                "return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)",
                "return year % 4 == 0 and year % 100 != 0",
            ),
        ),
        Snippet(
            "days_in_month",
            '''DAYS_IN_MONTH = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def days_in_month(year, month):
    """Number of days in `month` (1-12) of `year`."""
    if not 1 <= month <= 12:
        raise ValueError(f"month must be 1-12, got {month}")
    if month == 2 and is_leap_year(year):
        return 29
    return DAYS_IN_MONTH[month - 1]
''',
            """def test_days_in_month():
    assert days_in_month(2023, 2) == 28
    assert days_in_month(2024, 2) == 29
    assert days_in_month(2024, 12) == 31
""",
            ("return DAYS_IN_MONTH[month - 1]", "return DAYS_IN_MONTH[month % 12]"),
        ),
        Snippet(
            "day_of_year",
            '''def day_of_year(year, month, day):
    """1 for January 1st, 365 or 366 for December 31st."""
    total = day
    for earlier in range(1, month):
        total += days_in_month(year, earlier)
    return total
''',
            """def test_day_of_year():
    assert day_of_year(2023, 1, 1) == 1
    assert day_of_year(2024, 12, 31) == 366
    assert day_of_year(2023, 3, 1) == 60
""",
            ("for earlier in range(1, month):", "for earlier in range(1, month + 1):"),
        ),
        Snippet(
            "add_days",
            '''def add_days(year, month, day, days):
    """The date `days` days after (or before, when negative) the given one."""
    while days > 0:
        remaining = days_in_month(year, month) - day
        if days <= remaining:
            return year, month, day + days
        days -= remaining + 1
        year, month, day = (year + 1, 1, 1) if month == 12 else (year, month + 1, 1)
    while days < 0:
        if -days < day:
            return year, month, day + days
        days += day
        year, month = (year - 1, 12) if month == 1 else (year, month - 1)
        day = days_in_month(year, month)
    return year, month, day
''',
            """def test_add_days_forward():
    assert add_days(2023, 12, 30, 3) == (2024, 1, 2)


def test_add_days_backward():
    assert add_days(2024, 3, 1, -1) == (2024, 2, 29)
""",
            ("days -= remaining + 1", "days -= remaining"),
        ),
        Snippet(
            "weekday",
            '''WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def weekday(year, month, day):
    """Day of the week by Zeller's congruence, as a name ("Monday" ... "Sunday")."""
    if month < 3:
        month += 12
        year -= 1
    k, j = year % 100, year // 100
    h = (day + 13 * (month + 1) // 5 + k + k // 4 + j // 4 + 5 * j) % 7
    return WEEKDAYS[(h + 5) % 7]
''',
            """def test_weekday():
    assert weekday(2024, 1, 1) == "Monday"
    assert weekday(2000, 2, 29) == "Tuesday"
""",
            ("return WEEKDAYS[(h + 5) % 7]", "return WEEKDAYS[h % 7]"),
        ),
    ),
)

SEQUENCES = Theme(
    module="sequences",
    doc="Helpers for lists and iterables: chunking, flattening, de-duplication, grouping and windows.",
    imports=("from collections.abc import Iterable",),
    snippets=(
        Snippet(
            "chunk",
            '''def chunk(items, size):
    """Split a list into consecutive pieces of `size` items; the last piece may be shorter."""
    if size < 1:
        raise ValueError("size must be at least 1")
    return [items[start : start + size] for start in range(0, len(items), size)]
''',
            """def test_chunk():
    assert chunk([1, 2, 3, 4, 5], 2) == [[1, 2], [3, 4], [5]]
""",
            (
                "return [items[start : start + size] for start in range(0, len(items), size)]",
                "return [items[start : start + size] for start in range(0, len(items) - 1, size)]",
            ),
        ),
        Snippet(
            "flatten",
            '''def flatten(nested):
    """Flatten arbitrarily nested lists and tuples into one list; strings are kept whole."""
    flat = []
    for element in nested:
        if isinstance(element, (list, tuple)):
            flat.extend(flatten(element))
        else:
            flat.append(element)
    return flat
''',
            """def test_flatten():
    assert flatten([1, [2, (3, [4])], "ab"]) == [1, 2, 3, 4, "ab"]
""",
            ("flat.extend(flatten(element))", "flat.extend(element)"),
        ),
        Snippet(
            "dedupe",
            '''def dedupe(items, key=None):
    """The items in their first-seen order without repeats; `key` decides what counts as the same item."""
    seen = set()
    unique = []
    for item in items:
        marker = item if key is None else key(item)
        if marker in seen:
            continue
        seen.add(marker)
        unique.append(item)
    return unique
''',
            """def test_dedupe_keeps_order():
    assert dedupe([3, 1, 3, 2, 1]) == [3, 1, 2]


def test_dedupe_key():
    assert dedupe(["a", "A", "b"], key=str.lower) == ["a", "b"]
""",
            ("marker = item if key is None else key(item)", "marker = item"),
        ),
        Snippet(
            "group_by",
            '''def group_by(items, key):
    """A dict from each key to the items having it, in input order."""
    groups = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return groups
''',
            """def test_group_by():
    assert group_by(["apple", "avocado", "banana"], key=lambda s: s[0]) == {
        "a": ["apple", "avocado"],
        "b": ["banana"],
    }
""",
            ("groups.setdefault(key(item), []).append(item)", "groups[key(item)] = [item]"),
        ),
        Snippet(
            "windows",
            '''def windows(items: Iterable, size):
    """Every run of `size` consecutive items, as tuples (none when there are fewer than `size` items)."""
    items = list(items)
    return [tuple(items[i : i + size]) for i in range(len(items) - size + 1)]
''',
            """def test_windows():
    assert windows([1, 2, 3, 4], 3) == [(1, 2, 3), (2, 3, 4)]
    assert windows([1], 2) == []
""",
            (
                "return [tuple(items[i : i + size]) for i in range(len(items) - size + 1)]",
                "return [tuple(items[i : i + size]) for i in range(len(items) - size)]",
            ),
        ),
        Snippet(
            "interleave",
            '''def interleave(*lists):
    """Take one item from each list in turn until all are exhausted."""
    result = []
    longest = max((len(lst) for lst in lists), default=0)
    for index in range(longest):
        for lst in lists:
            if index < len(lst):
                result.append(lst[index])
    return result
''',
            """def test_interleave():
    assert interleave([1, 2, 3], ["a"], [True, False]) == [1, "a", True, 2, False, 3]
""",
            (
                "longest = max((len(lst) for lst in lists), default=0)",
                "longest = min((len(lst) for lst in lists), default=0)",
            ),
        ),
    ),
)

CONFIG = Theme(
    module="settings",
    doc="Reading `key = value` settings files with sections, comments, typed values and defaults.",
    imports=(),
    snippets=(
        Snippet(
            "parse_value",
            '''TRUE_WORDS = frozenset({"true", "yes", "on", "1"})
FALSE_WORDS = frozenset({"false", "no", "off", "0"})


def parse_value(raw):
    """A setting's value: booleans, integers, floats, quoted strings, else the bare text."""
    text = raw.strip()
    lowered = text.lower()
    if lowered in TRUE_WORDS:
        return True
    if lowered in FALSE_WORDS:
        return False
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\\"'":
        return text[1:-1]
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text
''',
            """def test_parse_value_types():
    assert parse_value(" yes ") is True
    assert parse_value("42") == 42
    assert parse_value("2.5") == 2.5
    assert parse_value("'quoted'") == "quoted"
    assert parse_value("plain") == "plain"
""",
            ("return text[1:-1]", "return text"),
        ),
        Snippet(
            "parse_settings",
            '''def parse_settings(text):
    """Parse settings text into {section: {key: value}}; keys before any [section] go to "default".

    Blank lines and lines starting with `#` or `;` are ignored; a line without `=` is an error that names
    its line number.
    """
    sections = {"default": {}}
    current = sections["default"]
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        if stripped.startswith("[") and stripped.endswith("]"):
            current = sections.setdefault(stripped[1:-1].strip(), {})
            continue
        if "=" not in stripped:
            raise ValueError(f"line {number}: expected key = value")
        key, _, raw = stripped.partition("=")
        current[key.strip()] = parse_value(raw)
    return sections
''',
            """SAMPLE = '''
# comment
name = demo
[server]
port = 8080
debug = off
'''


def test_parse_settings_sections():
    parsed = parse_settings(SAMPLE)
    assert parsed["default"] == {"name": "demo"}
    assert parsed["server"] == {"port": 8080, "debug": False}


def test_parse_settings_error_line():
    import pytest

    with pytest.raises(ValueError, match="line 2"):
        parse_settings("a = 1\\nbroken")
""",
            ("current[key.strip()] = parse_value(raw)", "current[key] = parse_value(raw)"),
        ),
        Snippet(
            "merge_settings",
            '''def merge_settings(base, override):
    """Merge two parsed settings: sections are merged key by key, `override` winning; inputs are not changed."""
    merged = {name: dict(values) for name, values in base.items()}
    for name, values in override.items():
        merged.setdefault(name, {}).update(values)
    return merged
''',
            """def test_merge_settings():
    base = {"server": {"port": 80, "host": "a"}}
    merged = merge_settings(base, {"server": {"port": 81}, "log": {"level": "info"}})
    assert merged == {"server": {"port": 81, "host": "a"}, "log": {"level": "info"}}
    assert base == {"server": {"port": 80, "host": "a"}}
""",
            ("merged.setdefault(name, {}).update(values)", "merged[name] = dict(values)"),
        ),
        Snippet(
            "get_setting",
            '''def get_setting(settings, dotted, default=None):
    """Look up "section.key" (or a bare key in "default"); `default` when either part is missing."""
    section, _, key = dotted.rpartition(".")
    values = settings.get(section or "default", {})
    return values.get(key, default)
''',
            """def test_get_setting():
    settings = {"default": {"name": "x"}, "server": {"port": 1}}
    assert get_setting(settings, "server.port") == 1
    assert get_setting(settings, "name") == "x"
    assert get_setting(settings, "server.missing", 5) == 5
""",
            ('values = settings.get(section or "default", {})', "values = settings.get(section, {})"),
        ),
    ),
)

THEMES: tuple[Theme, ...] = (TEXT, STATS, INVENTORY, DATES, SEQUENCES, CONFIG)
