"""Registering the sidecar and the coordinator with Goose: `config.yaml` entries, provider, custom provider, recipe.

`registration.py` builds and writes the files for one agent, `yamltext.py` emits and merges Goose's YAML as
text, `command.py` is `goose-sidecar goose-config`. Imports only the standard library and itself: it runs no
service, it writes what Goose reads.
"""
