"""HTTP that runs and ``etl sync`` share: the retry policy, the clock it waits with,
sessions and response helpers, and recording/replaying with vcrpy (cassettes)."""
