"""The artifact and what describes it: the folder and its manifest, packaging, reports and the model card, and the
checks run on a built artifact."""
