.check_group_by <- function(object, group.by) {
  if (is.null(group.by)) return(NULL)
  if (!is.character(group.by) || anyNA(group.by)) stop("group.by must be a character vector of meta.data column names.", call. = FALSE)
  bad <- setdiff(group.by, colnames(object[[]]))
  if (length(bad)) {
    stop("group.by column(s) ", paste0("'", bad, "'", collapse = ", "), " not found in meta.data. ",
         "Available columns: ", paste(colnames(object[[]]), collapse = ", "), ".", call. = FALSE)
  }
  unique(group.by)
}

# R-style hyper-parameters (dot.case, doubles) -> the engine's (snake_case, ints, lists)
.hyperparameters <- function(h) {
  if (!length(h)) return(list())
  if (!is.list(h) || is.null(names(h)) || any(names(h) == "")) stop("hyperparameters must be a named list, e.g. list(diffusion.steps = 2000).", call. = FALSE)
  names(h) <- gsub(".", "_", names(h), fixed = TRUE)
  for (n in names(h)) {
    v <- h[[n]]
    if (is.numeric(v) && all(is.finite(v)) && all(v == round(v)) && all(abs(v) < .Machine$integer.max)) v <- as.integer(v)
    if (grepl("_hidden$", n)) v <- as.list(v)
    h[[n]] <- v
  }
  h
}

#' Train a cellsynth model on a Seurat object
#'
#' Trains the latent diffusion model of the Python engine (encoder, denoiser,
#' condition classifiers and the real-vs-generated discriminator) on the cells of
#' `object` and stores the model directory, gene list and settings with
#' [SeuratObject::Tool()] (never a live Python object); the command is logged with
#' [SeuratObject::LogSeuratCommand()]. Within an R session the model is also
#' cached by a fingerprint of the counts, the `group.by` columns and the settings,
#' so training the same cells the same way again reuses it.
#'
#' @param object A Seurat object with counts (preferred) or log-normalised data.
#' @param group.by `meta.data` columns to condition on (cell type, tissue,
#'   treatment...). `NULL`: no condition columns (see `clusters` for Leiden clusters).
#' @param assay Assay to use (default: the default assay).
#' @param model.dir Directory for the model files. Default: a directory under
#'   [tempdir()], gone when R ends; give one to keep the model.
#' @param clusters Also condition on Leiden clusters (column `cluster`), so that
#'   `condition = list(cluster = "3")` works on unlabelled cells. Off by default:
#'   unconditional cells of a cluster-conditioned model are measurably less realistic.
#' @param n.top.genes The networks learn at most this many highly variable genes
#'   (chosen by scanpy on the counts; `NULL`: every detected gene). Generated cells
#'   carry every gene of the assay either way: the others come from a per-gene model
#'   that keeps each gene's mean and detection rate.
#' @param min.cells Genes detected in fewer cells are not learned by the networks.
#' @param genes Learn exactly these genes instead of choosing (`NULL`: choose).
#' @param hyperparameters Named list of engine hyper-parameters (dot.case or
#'   snake_case), e.g. `list(diffusion.steps = 2000, encoder = "ae")`.
#' @param overwrite Replace an existing `model.dir`.
#' @param seed.use Random seed of every training step (0, as in Python and the CLI).
#' @param verbose Print progress.
#' @return `object`, with the model recorded in `Tool(object, "TrainCellSynth")`.
#' @seealso [GenerateCells()]
#' @examples
#' if (cellsynth_available()) {
#'   seu <- SeuratObject::pbmc_small
#'   seu <- TrainCellSynth(seu, group.by = "groups",
#'                         hyperparameters = list(diffusion.steps = 300, encoder.epochs = 30))
#'   SeuratObject::Tool(seu, "TrainCellSynth")$model.dir
#' }
#' @export
TrainCellSynth <- function(object, group.by = NULL, assay = NULL, model.dir = NULL, clusters = FALSE,
                           n.top.genes = 2000, min.cells = 3, genes = NULL,
                           hyperparameters = list(), overwrite = FALSE, seed.use = 0, verbose = TRUE) {
  .check_seurat(object)
  assay <- .check_assay(object, assay)
  group.by <- .check_group_by(object, group.by)
  if (!is.null(n.top.genes) && !(is.numeric(n.top.genes) && length(n.top.genes) == 1 && n.top.genes >= 1 && n.top.genes == round(n.top.genes))) {
    stop("n.top.genes must be a whole number >= 1, or NULL for every detected gene.", call. = FALSE)
  }
  if (!(is.numeric(min.cells) && length(min.cells) == 1 && min.cells >= 0 && min.cells == round(min.cells))) {
    stop("min.cells must be a whole number >= 0.", call. = FALSE)
  }
  if (!is.null(genes) && (!is.character(genes) || anyNA(genes))) stop("genes must be a character vector of gene names.", call. = FALSE)
  gene.choice <- list(n_top_genes = if (is.null(n.top.genes)) NULL else as.integer(n.top.genes),
                      min_cells = as.integer(min.cells), genes = if (is.null(genes)) NULL else as.list(genes))
  hp <- .hyperparameters(hyperparameters)
  eng <- .engine()
  adata <- .as_anndata(object, assay, columns = group.by %||% character(0))
  settings <- list(group.by = group.by, assay = assay, clusters = clusters, hyperparameters = hp, genes = gene.choice,
                   seed = as.integer(seed.use), engine = eng$cellsynth$`__version__`)
  key <- .py(eng$rbridge$fingerprint(adata, as.list(group.by), settings))
  cached <- .cellsynth$models[[key]]
  if (is.null(model.dir) && !is.null(cached) && file.exists(file.path(cached, "config.json"))) {
    if (verbose) message("Reusing the cellsynth model already trained on these cells: ", cached)
    dir <- cached
  } else {
    dir <- model.dir %||% file.path(tempdir(), paste0("cellsynth-", key))
    if (!is.null(model.dir) && file.exists(model.dir) && !overwrite) {
      stop("model.dir '", model.dir, "' exists; choose another or set overwrite = TRUE.", call. = FALSE)
    }
    if (verbose) {
      message("Training cellsynth on ", ncol(object), " cells x ", nrow(object[[assay]]), " genes (assay ", assay, ")",
              if (length(group.by)) paste0(", conditioned on ", paste(group.by, collapse = ", ")) else "")
    }
    args <- c(list(adata, labels = if (length(group.by)) as.list(group.by) else NULL,
                   clusters = clusters, seed = as.integer(seed.use)), gene.choice, hp)
    m <- .py(do.call(eng$cellsynth$CellSynth, args))
    .py(m$fit(progress_bar = verbose))
    .py(m$save(dir, overwrite = TRUE))
    .cellsynth$models[[key]] <- dir
  }
  cfg <- .read_config(file.path(dir, "config.json"))
  SeuratObject::Tool(object) <- list(
    model.dir = normalizePath(dir), group.by = group.by, assay = assay, key = key,
    labels = cfg$labels, genes = rownames(object[[assay]]), hyperparameters = cfg$hyperparameters,
    seed.use = seed.use
  )
  SeuratObject::LogSeuratCommand(object)
}

# The model stored in `object` if it fits the request (its directory exists, it was
# trained on `assay` and on exactly `group.by`, or on a superset when `subset` is TRUE),
# else a freshly trained (or session-cached) one. Returns list(object, tool).
.stored_or_train <- function(object, group.by, assay, model.dir, hyperparameters, seed.use, verbose, subset = FALSE) {
  tool <- .model_tool(object)
  fits_labels <- is.null(group.by) || (if (subset) all(group.by %in% tool$group.by) else setequal(group.by, tool$group.by))
  usable <- !is.null(tool) && file.exists(file.path(tool$model.dir, "config.json")) && fits_labels &&
    (is.null(assay) || identical(assay, tool$assay))
  if (usable) {
    if (verbose) message("Using the cellsynth model stored in the object: ", tool$model.dir)
    return(list(object = object, tool = tool))
  }
  object <- TrainCellSynth(object, group.by = group.by, assay = assay, model.dir = model.dir,
                           hyperparameters = hyperparameters, seed.use = seed.use, verbose = verbose)
  list(object = object, tool = SeuratObject::Tool(object, "TrainCellSynth"))
}

# The model record of `object`: TrainCellSynth's, or the `model` that generated its cells
# (GenerateCells, InterpolateCells, PredictPerturbation record it); NULL if none.
.model_tool <- function(object) {
  tool <- SeuratObject::Tool(object, "TrainCellSynth")
  for (f in c("GenerateCells", "InterpolateCells", "PredictPerturbation")) tool <- tool %||% SeuratObject::Tool(object, f)$model
  tool
}

# The engine's model of a model record, loaded from its directory.
.load_model <- function(tool) {
  .py(.engine()$cellsynth$CellSynth$load(tool$model.dir))
}

# config.json through Python's json (no R JSON dependency)
.read_config <- function(path) {
  json <- reticulate::import("json", convert = TRUE)
  con <- file(path, "r", encoding = "UTF-8")
  on.exit(close(con))
  json$loads(paste(readLines(con, warn = FALSE), collapse = "\n"))
}
