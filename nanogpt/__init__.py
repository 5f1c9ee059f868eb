"""The harness library: model, data, tracks, optimizer contract, records and statistics."""
