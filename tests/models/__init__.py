"""Model tests, their toy graph and the plain, slow references of the models' maths."""
