"""The rules: licshift's pure core (the decision rule, licenses, waves, pacing, outcomes,
messages). No I/O, no clock, no SDK; tested without any.
"""
