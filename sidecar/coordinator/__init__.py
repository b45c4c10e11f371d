"""The shared coordinator: an OpenAI-compatible proxy that identifies, classifies, routes and orders LLM calls."""
