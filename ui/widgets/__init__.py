"""Small self-contained widgets (painted with QPainter, no project knowledge)."""
