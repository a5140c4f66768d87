#' Predict how cells respond to a condition they never received
#'
#' Runs the engine's `predict_perturbation()` on the model stored in (or trained
#' for) `object`: the condition's latent shift, learned across the groups of
#' `group.by` (e.g. cell types) that have cells of both levels and balanced across
#' them (scGen's arithmetic), moves the latents of `cells`, by default by an amount
#' that depends on each cell's state (learned from the groups seen both ways), and the
#' predicted change is added to each cell's own profile (`method = "state"`). The model
#' is conditioned on `group.by` and the condition's column. For perturbation
#' prediction train with `hyperparameters = list(decoder = "linear")`: a linear gene
#' decoder turns the shift into the same log-fold change for every cell, where the
#' default MLP decoder damped the response of a type never seen treated (see the
#' README's perturbation figures).
#'
#' @inheritParams GenerateCells
#' @param condition Named list of one `meta.data` column and its target level, e.g.
#'   `list(stim = "STIM")`.
#' @param cells Cells to perturb (names or a logical vector over `object`'s cells).
#'   Default: every cell not already at the target level.
#' @param group.by Columns the shift is learned and balanced across (e.g. the cell
#'   type column); the model is trained on these plus the condition's column.
#' @param control The perturbed cells' level in the condition's column (default:
#'   their own level, which must be one).
#' @param method `"state"` (default: a shift whose size depends on each cell's state,
#'   learned from the types seen both ways, added to the cell's own profile; see the
#'   Python `cellsynth.tl.state_shift`), `"diffusion"` (shift, then diffusion
#'   refinement) or `"shift"` (the plain latent shift).
#' @param depth Refinement depth of 1000 (`NULL`: the engine's default, 50).
#' @return A Seurat object of predicted cells, one per perturbed cell, named after
#'   them with the target level appended: counts, log-normalised data, the cells'
#'   `meta.data` columns with the condition's column set to the target,
#'   `perturbation_method` and `synthetic = TRUE`.
#' @examples
#' if (cellsynth_available()) {
#'   seu <- SeuratObject::pbmc_small
#'   pred <- PredictPerturbation(seu, condition = list(groups = "g2"), group.by = "RNA_snn_res.1",
#'                               cells = seu$groups == "g1",
#'                               hyperparameters = list(diffusion.steps = 300, encoder.epochs = 30))
#'   table(pred$groups)
#' }
#' @export
PredictPerturbation <- function(object, condition, cells = NULL, group.by = NULL, control = NULL,
                                method = c("state", "diffusion", "shift"), depth = NULL, assay = NULL, model.dir = NULL,
                                hyperparameters = list(), seed.use = 0, verbose = TRUE) {
  .check_seurat(object)
  method <- match.arg(method)
  condition <- .check_condition(object, condition)
  if (length(condition) != 1) stop("condition must name one column and its target level, e.g. list(stim = \"STIM\").", call. = FALSE)
  column <- names(condition)
  meta <- object[[]]
  missing <- setdiff(group.by, colnames(meta))
  if (length(missing)) {
    stop("group.by column(s) ", paste(missing, collapse = ", "), " not in meta.data. Available columns: ",
         paste(colnames(meta), collapse = ", "), ".", call. = FALSE)
  }
  if (is.null(cells)) cells <- as.character(meta[[column]]) != condition[[column]]
  if (is.logical(cells)) {
    if (length(cells) != ncol(object)) stop("a logical `cells` must have one value per cell (", ncol(object), ").", call. = FALSE)
    cells <- colnames(object)[!is.na(cells) & cells]
  }
  unknown <- setdiff(cells, colnames(object))
  if (length(unknown)) stop(length(unknown), " cell name(s) not in the object, e.g. ", unknown[1], ".", call. = FALSE)
  if (!length(cells)) stop("no cells to perturb: every cell is already at ", column, " = ", condition[[column]], ".", call. = FALSE)
  labels <- unique(c(group.by, column))
  got <- .stored_or_train(object, labels, assay, model.dir, hyperparameters, seed.use, verbose, subset = TRUE)
  tool <- got$tool
  eng <- .engine()
  m <- .load_model(tool)
  ctrl <- .as_anndata(got$object[, cells], tool$assay, columns = labels)
  if (verbose) message("Predicting ", column, " = ", condition[[column]], " for ", length(cells), " cells (", method, ")")
  pred <- .py(eng$cellsynth$tl$predict_perturbation(m, ctrl, condition, control = control, method = method,
                                     depth = if (is.null(depth)) NULL else as.integer(depth), seed = as.integer(seed.use)))
  out <- .as_seurat(pred, assay = tool$assay, project = "cellsynth")
  SeuratObject::Tool(out) <- list(model = tool, condition = condition, method = method, seed.use = seed.use)
  out
}
