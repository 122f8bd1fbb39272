"""Feature maps that go in front of an RFM (image patch features)."""
