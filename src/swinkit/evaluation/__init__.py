"""Task metrics as pure functions with their evaluators (semantic segmentation: ``segmentation``)."""
