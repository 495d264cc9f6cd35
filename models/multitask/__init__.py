"""Models of PaddleRec's multitask family: the few-shot meta-learners, one folder each."""
