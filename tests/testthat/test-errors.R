test_that("an unknown group.by column is a clear error naming the columns", {
  skip_if_no_engine()
  expect_error(GenerateCells(SeuratObject::pbmc_small, n.cells = 5, group.by = "celltype"),
               "group.by column\\(s\\) 'celltype' not found in meta.data. Available columns: orig.ident")
  expect_error(TrainCellSynth(SeuratObject::pbmc_small, group.by = "nope"), "'nope' not found")
})

test_that("an unknown condition column or value is a clear error listing the valid ones", {
  skip_if_no_engine()
  seu <- SeuratObject::pbmc_small
  expect_error(GenerateCells(seu, n.cells = 5, condition = list(groups = "g9")),
               "groups = 'g9' does not occur .* Valid values: g1, g2")
  expect_error(GenerateCells(seu, n.cells = 5, condition = list(tissue = "lung")),
               "'tissue' is not in meta.data")
  expect_error(GenerateCells(seu, n.cells = 0), "positive whole number")
  expect_error(GenerateCells(list(), n.cells = 5), "must be a Seurat object")
})

test_that("a missing Python gives an R error naming the problem and the fix", {
  out <- run_rscript(c(
    "library(cellsynth)",
    "r <- tryCatch(GenerateCells(SeuratObject::pbmc_small, n.cells = 5), error = function(e) conditionMessage(e))",
    "cat('MESSAGE:', r)"
  ), env = c("RETICULATE_PYTHON=/nonexistent/bin/python", "RETICULATE_PYTHON_FALLBACK=", "WORKON_HOME=/nonexistent"))
  expect_match(out, "MESSAGE:")
  expect_match(out, "Python")
  expect_match(out, "install_cellsynth()", fixed = TRUE)
})

test_that("a Python without the engine gives an R error naming the Python and the missing modules", {
  bare <- Sys.which("python3")
  venv <- tempfile("bare-venv-")
  ok <- nzchar(bare) && system2(bare, c("-m", "venv", "--without-pip", venv), stdout = FALSE, stderr = FALSE) == 0
  if (!ok) skip("no python3 to make an empty virtualenv with")
  py <- file.path(venv, "bin", "python")
  out <- run_rscript(c(
    "library(cellsynth)",
    "r <- tryCatch(GenerateCells(SeuratObject::pbmc_small, n.cells = 5), error = function(e) conditionMessage(e))",
    "cat('MESSAGE:', r)"
  ), env = c(paste0("RETICULATE_PYTHON=", py)))
  expect_match(out, "Missing Python modules: cellsynth, torch")
  expect_match(out, venv, fixed = TRUE)
  expect_match(out, "install_cellsynth()", fixed = TRUE)
})
