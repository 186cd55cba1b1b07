"""The faust app: topics, agents and timers that run the projections live."""
