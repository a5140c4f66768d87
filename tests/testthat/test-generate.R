# The issue's acceptance, literally: default settings, pbmc_small, group.by = "groups".
test_that("GenerateCells returns a Seurat object of synthetic cells with the features and labels", {
  skip_if_no_engine()
  seu <- SeuratObject::pbmc_small
  msgs <- character()
  syn <- withCallingHandlers(
    GenerateCells(seu, n.cells = 60, group.by = "groups"),
    message = function(m) { msgs <<- c(msgs, conditionMessage(m)); invokeRestart("muffleMessage") }
  )
  expect_s4_class(syn, "Seurat")
  expect_equal(ncol(syn), 60)
  expect_identical(rownames(syn), rownames(seu))
  expect_equal(nrow(syn), 230)
  expect_true(is.logical(syn$synthetic) && all(syn$synthetic))
  expect_true("groups" %in% colnames(syn[[]]))
  expect_setequal(unique(as.character(syn$groups)), c("g1", "g2"))
  expect_true(any(grepl("^Training cellsynth", msgs)))
  counts <- SeuratObject::GetAssayData(syn, slot = "counts")
  expect_s4_class(counts, "dgCMatrix")
  expect_true(all(counts@x == round(counts@x)) && all(counts@x > 0))
  # data is log1p of counts normalised to 1e4 per cell, as Seurat's LogNormalize
  lib <- Matrix::colSums(counts)
  expect_equal(as.matrix(SeuratObject::GetAssayData(syn, slot = "data"))[, 1:5],
               log1p(t(t(as.matrix(counts)) / lib) * 1e4)[, 1:5], tolerance = 1e-5)

  # a second call on the same cells reuses the model: no training
  msgs <- character()
  g1 <- withCallingHandlers(
    GenerateCells(seu, n.cells = 20, condition = list(groups = "g1")),
    message = function(m) { msgs <<- c(msgs, conditionMessage(m)); invokeRestart("muffleMessage") }
  )
  expect_equal(ncol(g1), 20)
  expect_true(all(g1$groups == "g1"))
  expect_false(any(grepl("^Training", msgs)))
  expect_true(any(grepl("^Reusing", msgs)))
  expect_identical(SeuratObject::Misc(g1, "cellsynth")$model.dir, SeuratObject::Misc(syn, "cellsynth")$model.dir)
})

test_that("TrainCellSynth stores paths and settings, not Python objects, and logs the command", {
  skip_if_no_engine()
  seu <- TrainCellSynth(SeuratObject::pbmc_small, group.by = "groups", hyperparameters = FAST, verbose = FALSE)
  tool <- SeuratObject::Tool(seu, "TrainCellSynth")
  expect_true(dir.exists(tool$model.dir))
  expect_true(all(c("config.json", "genes.txt") %in% list.files(tool$model.dir)))
  expect_false(any(vapply(unlist(tool, recursive = TRUE), inherits, logical(1), "python.builtin.object")))
  expect_identical(tool$genes, rownames(seu))
  expect_equal(tool$hyperparameters$diffusion_steps, 300)
  expect_true(any(grepl("TrainCellSynth", names(seu@commands))))
  # the stored model is used by GenerateCells on that object; merge = TRUE keeps the real cells
  both <- GenerateCells(seu, n.cells = 10, merge = TRUE, verbose = FALSE)
  expect_equal(ncol(both), ncol(seu) + 10)
  expect_equal(sum(both$synthetic), 10)
  # same seed, same cells
  a <- GenerateCells(seu, n.cells = 8, seed.use = 3, verbose = FALSE)
  b <- GenerateCells(seu, n.cells = 8, seed.use = 3, verbose = FALSE)
  expect_identical(SeuratObject::GetAssayData(a, slot = "counts"), SeuratObject::GetAssayData(b, slot = "counts"))
})

test_that("EvaluateCells returns metrics next to a real-vs-real control, and a plot", {
  skip_if_no_engine()
  seu <- SeuratObject::pbmc_small
  syn <- GenerateCells(seu, n.cells = 40, group.by = "groups", hyperparameters = FAST, verbose = FALSE)
  ev <- EvaluateCells(seu, syn, n.pcs = 10)
  expect_s3_class(ev$metrics, "data.frame")
  expect_setequal(ev$metrics$metric, c("rf_auc", "knn_auc", "ilisi", "spearman_gene_means", "mmd"))
  expect_true(all(is.finite(ev$metrics$generated)) && all(is.finite(ev$metrics$real.vs.real)))
  auc <- ev$metrics[ev$metrics$metric %in% c("rf_auc", "knn_auc"), ]
  expect_true(all(auc$generated >= 0 & auc$generated <= 1))
  expect_s3_class(ev$plot, "ggplot")
  # a set graded against itself is indistinguishable: the control side of the check
  self <- EvaluateCells(seu, seu, n.pcs = 10, plot = FALSE)$metrics
  expect_lt(self$generated[self$metric == "knn_auc"], 0.7)
})

test_that("InterpolateCells returns path cells with their positions", {
  skip_if_no_engine()
  seu <- SeuratObject::pbmc_small
  path <- InterpolateCells(seu, from = list(groups = "g1"), to = list(groups = "g2"), method = "latent",
                           n.positions = 4, n.cells = 5, hyperparameters = FAST, verbose = FALSE)
  expect_equal(ncol(path), 20)
  expect_identical(rownames(path), rownames(seu))
  expect_equal(sort(unique(path$interpolation_position)), c(0, 1 / 3, 2 / 3, 1))
  expect_true(all(path$synthetic))
  expect_error(InterpolateCells(seu, from = list(groups = "g1"), to = list(groups = "g7")), "Valid values: g1, g2")
})

test_that("PredictPerturbation predicts every control cell at the target level", {
  skip_if_no_engine()
  seu <- SeuratObject::pbmc_small
  pred <- PredictPerturbation(seu, condition = list(groups = "g2"), group.by = "RNA_snn_res.1",
                              hyperparameters = FAST, verbose = FALSE)
  g1 <- colnames(seu)[seu$groups == "g1"]
  expect_equal(ncol(pred), length(g1))
  expect_identical(colnames(pred), paste0(g1, "-g2"))
  expect_identical(rownames(pred), rownames(seu))
  expect_true(all(pred$groups == "g2") && all(pred$synthetic))
  expect_identical(as.character(pred$RNA_snn_res.1), as.character(seu$RNA_snn_res.1[g1]))
  shift <- PredictPerturbation(seu, condition = list(groups = "g2"), group.by = "RNA_snn_res.1",
                               cells = g1[1:5], method = "shift", hyperparameters = FAST, verbose = FALSE)
  expect_equal(ncol(shift), 5)
  expect_true(all(shift$perturbation_method == "shift"))
  state <- PredictPerturbation(seu, condition = list(groups = "g2"), group.by = "RNA_snn_res.1",
                               cells = g1[1:5], method = "state", hyperparameters = FAST, verbose = FALSE)
  expect_equal(ncol(state), 5)
  expect_true(all(state$perturbation_method == "state"))
  counts <- SeuratObject::GetAssayData(state, slot = "counts")
  expect_true(all(counts@x == round(counts@x)) && all(counts@x >= 0))
  expect_error(PredictPerturbation(seu, condition = list(groups = "g9")), "Valid values: g1, g2")
  expect_error(PredictPerturbation(seu, condition = list(groups = "g2"), group.by = "nope"), "not in meta.data")
  expect_error(PredictPerturbation(seu, condition = list(groups = "g2"), cells = "cellX"), "not in the object")
})
