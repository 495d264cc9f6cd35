"""Model code the learners share: episode sampling (episodes.py), Omniglot's data
(omniglot.py), the model interface's defaults (fewshot_model.py), twice
differentiable layers, the metric learners' backbones and nearest-centroid
classifier, and the readers of the RGB sets and of feature vectors (readers/).
It imports only models.lib; see README.md, "Architecture"."""
