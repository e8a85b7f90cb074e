"""Who is asking and what they may do: API keys (hashed), scopes, tenants, rate limits."""
