#' Cells along a path between two cell states
#'
#' Runs the engine's `interpolate()` on the model stored in (or trained for)
#' `object`: `n.cells` cells at each of `n.positions` positions between the state
#' `from` and the state `to`, starting and ending at real cells of `object`.
#' Methods: `"gradient"` (scDiffusion's Gradient Interpolation, classifier-guided
#' from depth 600), `"prior"` (mixing in the DDIM-inverted prior) and `"latent"`
#' (mixing clean latents, then renoising and denoising), as in scVAEDer.
#'
#' @inheritParams GenerateCells
#' @param from,to Named lists of `meta.data` values, e.g. `list(groups = "g1")`.
#' @param method `"gradient"`, `"prior"` or `"latent"`.
#' @param n.positions Positions along the path (at least 2).
#' @param n.cells Cells at each position.
#' @param depth Noise depth (default 600 for `"gradient"`, T/2 otherwise).
#' @return A Seurat object of `n.positions * n.cells` synthetic cells with
#'   `interpolation_position` (0 to 1), `interpolation_method`, `path_cell` and
#'   `synthetic` in `meta.data`.
#' @examples
#' if (cellsynth_available()) {
#'   seu <- SeuratObject::pbmc_small
#'   path <- InterpolateCells(seu, from = list(groups = "g1"), to = list(groups = "g2"),
#'                            method = "latent", n.positions = 4, n.cells = 5,
#'                            hyperparameters = list(diffusion.steps = 300, encoder.epochs = 30))
#'   table(path$interpolation_position)
#' }
#' @export
InterpolateCells <- function(object, from, to, method = c("gradient", "prior", "latent"), n.positions = 10,
                             n.cells = 50, depth = NULL, assay = NULL, model.dir = NULL,
                             hyperparameters = list(), seed.use = 0, verbose = TRUE) {
  .check_seurat(object)
  method <- match.arg(method)
  from <- .check_condition(object, from)
  to <- .check_condition(object, to)
  if (is.null(from) || is.null(to)) stop("from and to must name a state, e.g. from = list(groups = \"g1\").", call. = FALSE)
  group.by <- unique(c(names(from), names(to)))
  got <- .stored_or_train(object, group.by, assay, model.dir, hyperparameters, seed.use, verbose, subset = TRUE)
  object <- got$object
  tool <- got$tool
  eng <- .engine()
  m <- .load_model(tool)
  cells <- .as_anndata(object, tool$assay, columns = group.by)
  if (verbose) message("Interpolating (", method, "): ", n.cells, " cells at each of ", n.positions, " positions")
  path <- .py(eng$cellsynth$tl$interpolate(m, from, to, method = method, n_positions = as.integer(n.positions), n_cells = as.integer(n.cells),
                            adata = cells, depth = if (is.null(depth)) NULL else as.integer(depth),
                            seed = as.integer(seed.use)))
  out <- .as_seurat(path, assay = tool$assay, project = "cellsynth")
  SeuratObject::Tool(out) <- list(model = tool, from = from, to = to, method = method, seed.use = seed.use)
  out
}
