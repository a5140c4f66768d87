library(testthat)
library(cellsynth)

test_check("cellsynth")
