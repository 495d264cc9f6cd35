"""Code the model folders share: the conv-4 network, the inner loop of the
gradient-based learners, episode sampling, the model interface's defaults, and
the dataset readers (readers/). See README.md, "Architecture"."""
