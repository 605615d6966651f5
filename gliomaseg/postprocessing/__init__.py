"""Cleaning predicted label maps lesion by lesion: readable rules, and their search on validation cases."""
