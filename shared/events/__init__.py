"""Events: Polymarket's questions with one or more candidate markets, from the market catalogue."""
