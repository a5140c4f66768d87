# A real client: Seurat's standard workflow on GenerateCells output, and merge with the
# real object (issue 27). Genes detected in few cells are left to the per-gene model
# (n.top.genes below the assay's size), so the whole-transcriptome path is exercised.
test_that("Seurat's standard workflow runs on generated cells, and they merge with the real ones", {
  skip_if_no_engine()
  skip_if_not_installed("Seurat")
  seu <- TrainCellSynth(SeuratObject::pbmc_small, group.by = "groups", n.top.genes = 100,
                        hyperparameters = FAST, verbose = FALSE)
  syn <- GenerateCells(seu, n.cells = 80, per.condition = TRUE, verbose = FALSE)
  expect_identical(rownames(syn), rownames(seu))
  warned <- character()
  keep <- function(w) { warned <<- c(warned, conditionMessage(w)); invokeRestart("muffleWarning") }
  res <- withCallingHandlers({
    x <- Seurat::NormalizeData(syn, verbose = FALSE)
    x <- Seurat::FindVariableFeatures(x, nfeatures = 100, verbose = FALSE)
    x <- Seurat::ScaleData(x, verbose = FALSE)
    x <- Seurat::RunPCA(x, npcs = 10, verbose = FALSE)
    x <- Seurat::FindNeighbors(x, dims = 1:10, verbose = FALSE)
    x <- Seurat::FindClusters(x, resolution = 0.8, verbose = FALSE)
    Seurat::Idents(x) <- "groups"
    markers <- Seurat::FindAllMarkers(x, only.pos = TRUE, logfc.threshold = 0.25, verbose = FALSE)
    both <- merge(seu, syn, add.cell.ids = c("real", "syn"))
    list(x = x, markers = markers, both = both)
  }, warning = keep)
  expect_length(grep("type|format|class|coerc|sparse|dense", warned, value = TRUE, ignore.case = TRUE), 0)
  expect_true(nlevels(res$x$seurat_clusters) >= 1)
  expect_s3_class(res$markers, "data.frame")
  expect_true(nrow(res$markers) > 0)
  expect_equal(ncol(res$both), ncol(seu) + 80)
  expect_identical(rownames(res$both), rownames(seu))
  # the gene choice reached the engine
  cfg <- cellsynth:::.read_config(file.path(SeuratObject::Tool(seu, "TrainCellSynth")$model.dir, "config.json"))
  expect_equal(cfg$gene_choice$n_modelled, 100)
})

test_that("EvaluateCells writes a self-contained HTML report", {
  skip_if_no_engine()
  skip_if_not_installed("Seurat")
  seu <- SeuratObject::pbmc_small
  syn <- GenerateCells(seu, n.cells = 60, group.by = "groups", per.condition = TRUE, hyperparameters = FAST, verbose = FALSE)
  path <- file.path(tempdir(), "cellsynth-report.html")
  ev <- EvaluateCells(seu, syn, report = path, group.by = "groups", plot = FALSE)
  expect_true(file.exists(path))
  page <- paste(readLines(path, warn = FALSE), collapse = "\n")
  expect_true(grepl("UMAP of real and generated cells", page, fixed = TRUE))
  expect_true(grepl("Marker genes", page, fixed = TRUE))
  expect_gte(length(gregexpr("data:image/png;base64,", page, fixed = TRUE)[[1]]), 4)
  expect_identical(ev$report, normalizePath(path))
})
