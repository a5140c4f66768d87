#' cellsynth: realistic single-cell RNA-seq cells from latent diffusion models
#'
#' Seurat front end to the 'cellsynth' Python engine. `TrainCellSynth()` trains a
#' latent diffusion model on a Seurat object, `GenerateCells()` returns new cells
#' as a Seurat object, `EvaluateCells()` grades synthetic cells against real ones.
#' The engine runs in Python through reticulate: see `install_cellsynth()`.
#'
#' Nothing Python is ever stored in a Seurat object: the model lives in a
#' directory (`config.json`, safetensors weights and the gene list), and the object
#' keeps only its path, the gene list and the settings (`Tool(object)`).
#'
#' @keywords internal
#' @importFrom rlang .data
"_PACKAGE"

# module handles and the per-session model cache (fingerprint -> model directory)
.cellsynth <- new.env(parent = emptyenv())

`%||%` <- function(a, b) if (is.null(a)) b else a

.onLoad <- function(libname, pkgname) {
  # a virtualenv made by install_cellsynth() is used when the user named no Python
  if (!nzchar(Sys.getenv("RETICULATE_PYTHON")) &&
      isTRUE(tryCatch(reticulate::virtualenv_exists(.default_env), error = function(e) FALSE))) {
    reticulate::use_virtualenv(.default_env, required = FALSE)
  }
  .cellsynth$py <- reticulate::import("cellsynth", delay_load = TRUE)
  .cellsynth$models <- list()
  invisible()
}
