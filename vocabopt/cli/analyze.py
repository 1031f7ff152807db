"""`vocabopt analyze`, `merge` and `compare`."""
