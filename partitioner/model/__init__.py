"""The cost model every stage shares: per-op cycles, sharding and collectives, Partition and check()."""
