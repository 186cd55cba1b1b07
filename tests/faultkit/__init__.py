"""What the fault suite (tests/integration/test_faults.py, test_scaleout.py) and
`make fault-long` share: the one oracle, the bad-record classes, the fault switch."""
