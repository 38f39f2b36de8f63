"""Load, replay and benchmark tools for busbridge."""
