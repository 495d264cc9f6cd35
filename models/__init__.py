"""The model zoo: models/multitask/<model>/ (one folder per learner) and
models/common/ (the code they share). Imported from the project root."""
