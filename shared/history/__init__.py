"""Price history of every open market, captured by each catalogue refresh (no upstream call):
``capture`` (a record's capture), ``store`` (writing captures, a resolved market's final
point), ``points`` (the stored point and its packed chunks), ``downsample`` (the policy and the
compaction job), ``series`` (reading one series per token)."""
