"""The OpenAI-compatible server: chat/text completions with the search loop on the server."""
