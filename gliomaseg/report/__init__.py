"""Reports people open: a self-contained HTML page of a run or an evaluation."""
