"""Wire models for each surface and pure converters between the OpenAI and native shapes."""
