"""Neural networks of SpineSeg, built from small named blocks."""
