.check_condition <- function(object, condition) {
  if (is.null(condition)) return(NULL)
  if (!is.list(condition) && !is.character(condition)) stop("condition must be a named list, e.g. list(groups = \"g1\").", call. = FALSE)
  condition <- as.list(condition)
  if (is.null(names(condition)) || any(names(condition) == "")) stop("condition must be named by meta.data column, e.g. list(groups = \"g1\").", call. = FALSE)
  meta <- object[[]]
  for (col in names(condition)) {
    if (!col %in% colnames(meta)) {
      stop("condition column '", col, "' is not in meta.data. Available columns: ",
           paste(colnames(meta), collapse = ", "), ".", call. = FALSE)
    }
    value <- condition[[col]]
    if (length(value) != 1 || is.na(value)) stop("condition ", col, " must be a single value.", call. = FALSE)
    have <- unique(as.character(meta[[col]][!is.na(meta[[col]])]))
    if (!as.character(value) %in% have) {
      stop("condition ", col, " = '", value, "' does not occur in meta.data column '", col, "'. Valid values: ",
           paste(sort(have), collapse = ", "), ".", call. = FALSE)
    }
    condition[[col]] <- as.character(value)
  }
  condition
}

#' Generate synthetic cells with cellsynth
#'
#' Generates new cells from the cellsynth model of `object` and returns them as a
#' new Seurat object with the same features. If no model is stored in the object
#' (see [TrainCellSynth()]) one is trained first, conditioned on `group.by` (or on
#' the columns named in `condition`); in an R session, the same cells trained the
#' same way are trained only once.
#'
#' @param object A Seurat object (the real cells).
#' @param n.cells Number of cells to generate (default: as many as `object` has).
#' @param condition Named list of `meta.data` values the cells should have, e.g.
#'   `list(groups = "g1")`; several columns combine (also into combinations never
#'   seen in training).
#' @param group.by Columns to condition the model on when it has to be trained
#'   (default: `names(condition)`; `NULL`: an unconditional model).
#' @param per.condition Split `n.cells` over every label combination in its
#'   training proportion, so every cell carries its labels. Default: `TRUE` when the
#'   model has labels and no `condition` is given.
#' @param guidance `"cfg"` (classifier-free) or `"classifier"` guidance.
#' @param scale Guidance scale (`NULL`: the engine's default, 1 for `"cfg"`,
#'   10 for `"classifier"`).
#' @param filter `NULL`, `"discriminator"` (keep the most realistic
#'   `keep.fraction` of the cells drawn) or `"classifier"` (keep cells a clean
#'   classifier labels as asked).
#' @param keep.fraction Fraction kept by the discriminator filter.
#' @param merge Return real and synthetic cells together (real cells get
#'   `synthetic = FALSE`).
#' @param assay Assay (default: the default assay).
#' @param model.dir,hyperparameters Passed to [TrainCellSynth()] when a model has
#'   to be trained.
#' @param seed.use Random seed (noise, count sampling, and training if needed).
#' @param verbose Print progress.
#' @param ... Further arguments to the engine's `generate()` (e.g. `sampler = "ddpm"`,
#'   `steps = 100`).
#' @return A Seurat object of `n.cells` cells with the model's features: counts, log-normalised
#'   data, `synthetic = TRUE`, and one `meta.data` column per condition column.
#' @examples
#' if (cellsynth_available()) {
#'   seu <- SeuratObject::pbmc_small
#'   fast <- list(diffusion.steps = 300, encoder.epochs = 30)
#'   syn <- GenerateCells(seu, n.cells = 40, group.by = "groups", hyperparameters = fast)
#'   table(syn$groups)
#'   g1 <- GenerateCells(seu, n.cells = 10, condition = list(groups = "g1"), hyperparameters = fast)
#' }
#' @export
GenerateCells <- function(object, n.cells = NULL, condition = NULL, group.by = NULL, per.condition = NULL,
                          guidance = c("cfg", "classifier"), scale = NULL, filter = NULL, keep.fraction = 0.8,
                          merge = FALSE, assay = NULL, model.dir = NULL, hyperparameters = list(),
                          seed.use = 0, verbose = TRUE, ...) {
  .check_seurat(object)
  guidance <- match.arg(guidance)
  n.cells <- n.cells %||% ncol(object)
  if (!is.numeric(n.cells) || length(n.cells) != 1 || is.na(n.cells) || n.cells < 1 || n.cells != round(n.cells)) {
    stop("n.cells must be a positive whole number.", call. = FALSE)
  }
  condition <- .check_condition(object, condition)
  group.by <- .check_group_by(object, group.by %||% names(condition))
  missing <- setdiff(names(condition), group.by)
  if (length(missing)) stop("condition column(s) ", paste(missing, collapse = ", "), " must be in group.by.", call. = FALSE)
  got <- .stored_or_train(object, group.by, assay, model.dir, hyperparameters, seed.use, verbose)
  object <- got$object
  tool <- got$tool
  m <- .load_model(tool)
  per.condition <- per.condition %||% (is.null(condition) && length(tool$labels) > 0)
  if (verbose) message("Generating ", n.cells, " cells", if (length(condition)) paste0(" with ", paste(names(condition), unlist(condition), sep = " = ", collapse = ", ")) else "")
  gen <- .py(m$generate(as.integer(n.cells), conditions = if (length(condition)) condition else NULL,
                        per_condition = isTRUE(per.condition), guidance = guidance, scale = scale,
                        filter = filter, keep_fraction = keep.fraction, seed = as.integer(seed.use),
                        progress_bar = verbose, ...))
  syn <- .as_seurat(gen, assay = tool$assay, project = "cellsynth")
  SeuratObject::Tool(syn) <- list(
    model = tool, n.cells = n.cells, condition = condition, guidance = guidance,
    filter = filter %||% "none", seed.use = seed.use
  )
  if (!merge) return(syn)
  real <- object
  real$synthetic <- FALSE
  clash <- intersect(colnames(real), colnames(syn))
  if (length(clash)) stop("cell names ", paste(utils::head(clash, 3), collapse = ", "), " occur in both objects; rename the real cells.", call. = FALSE)
  merge(real, syn)
}
