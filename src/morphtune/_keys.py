"""Result keys shared by the trainables, the searcher and the store callback (this module
imports nothing, so a trial actor unpickling its trainable stays light)."""

#: A result key a trainable sets (with the message) when the trial failed for a reason
#: that would fail again on a retry: the trial ends after one attempt, told FAIL.
ERROR_KEY = "trial_error"
