"""The model zoo: models/multitask/<model>/ (one folder per learner), models/common/
(the code they share) and models/lib/ (config options, metrics, checkpoint I/O).
Imported from the project root; nothing here imports tools/."""
