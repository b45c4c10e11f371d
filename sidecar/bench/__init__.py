"""Benchmarks and experiments. Nothing in the service packages (core, coordinator, toolserver, sim, fleet) imports
this package."""
