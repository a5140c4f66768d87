.default_env <- "r-cellsynth"
.required_modules <- c("cellsynth", "torch", "anndata", "scanpy", "numpy", "scipy", "sklearn")

# What is wrong with the Python side, or NULL when the engine can be used.
.engine_problem <- function() {
  started <- tryCatch({
    reticulate::py_config()
    TRUE
  }, error = function(e) conditionMessage(e))
  fix <- paste0(
    "Fix: run cellsynth::install_cellsynth() once (it makes the virtualenv '", .default_env,
    "'), or set RETICULATE_PYTHON to a Python that has cellsynth (in a source checkout, ",
    "`make install` creates .venv/bin/python) before loading the package; then restart R."
  )
  if (!isTRUE(started) || !reticulate::py_available(initialize = TRUE)) {
    return(paste0(
      "cellsynth needs Python (>= 3.10) and none could be started",
      if (is.character(started)) paste0(": ", started) else ".", "\n", fix
    ))
  }
  .import_torch_deepbind()
  cfg <- reticulate::py_config()
  missing <- .required_modules[!vapply(.required_modules, reticulate::py_module_available, logical(1))]
  if (length(missing)) {
    return(paste0(
      "cellsynth's Python engine is missing.\n",
      "  Python in use: ", cfg$python, " (", cfg$version, ")\n",
      "  Missing Python modules: ", paste(missing, collapse = ", "), "\n", fix
    ))
  }
  np <- reticulate::py_eval("__import__('numpy').__version__")
  if (utils::compareVersion(np, "2.0.0") >= 0 && utils::packageVersion("reticulate") < "1.36") {
    return(paste0(
      "reticulate ", utils::packageVersion("reticulate"), " cannot use numpy ", np,
      " (", cfg$python, "): install numpy<2 in that Python, or a newer reticulate."
    ))
  }
  NULL
}

# R loads its own BLAS (libR.so -> libblas.so.3) into the global symbol namespace
# first, and libtorch's BLAS calls then resolve to it: with Debian's reference BLAS
# training ran 21x slower inside R than in Python (measured: 34.8 vs 1.66 ms per
# step of a small MLP). Importing torch with RTLD_DEEPBIND makes it bind to its own
# bundled MKL (1.65 ms inside R). Linux only; elsewhere a plain import.
.import_torch_deepbind <- function() {
  reticulate::py_run_string(paste(
    "import os as _os, sys as _sys",
    "if 'torch' not in _sys.modules and hasattr(_os, 'RTLD_DEEPBIND'):",
    "    _flags = _sys.getdlopenflags()",
    "    try:",
    "        _sys.setdlopenflags(_os.RTLD_NOW | _os.RTLD_DEEPBIND)",
    "        import torch as _torch",
    "    except Exception:",
    "        pass",
    "    finally:",
    "        _sys.setdlopenflags(_flags)",
    sep = "\n"), local = TRUE)
  invisible()
}

#' Is the cellsynth Python engine usable?
#'
#' Starts Python through reticulate (if it is not running yet) and checks that the
#' engine and its dependencies import. Use it to skip examples and tests.
#'
#' @param quiet If `FALSE`, say what is missing and how to fix it.
#' @return `TRUE` or `FALSE`.
#' @examples
#' cellsynth_available()
#' @export
cellsynth_available <- function(quiet = TRUE) {
  problem <- tryCatch(.engine_problem(), error = function(e) conditionMessage(e))
  if (!is.null(problem) && !quiet) message(problem)
  is.null(problem)
}

# The Python modules, or a clear error naming the Python in use and the fix.
.engine <- function() {
  if (is.null(.cellsynth$checked)) {
    problem <- tryCatch(.engine_problem(), error = function(e) conditionMessage(e))
    if (!is.null(problem)) stop(problem, call. = FALSE)
    .cellsynth$checked <- TRUE
  }
  list(
    cellsynth = .cellsynth$py,
    rbridge = reticulate::import("cellsynth.io.rbridge", convert = TRUE),
    fidelity = reticulate::import("cellsynth.metrics.fidelity", convert = TRUE),
    report = reticulate::import("cellsynth.metrics.report", convert = TRUE)
  )
}

# Run a Python call; a Python exception becomes an R error with its message only.
.py <- function(expr) {
  tryCatch(expr, error = function(e) {
    msg <- sub("\n*Detailed traceback:.*$", "", conditionMessage(e))
    msg <- sub("^[A-Za-z.]*Error: ", "", sub("^Error in py_call_impl\\(.*?\\) *: *\n? *", "", msg))
    stop(msg, call. = FALSE)
  })
}

#' Install the cellsynth Python engine into a virtualenv
#'
#' Creates the virtualenv `envname` with reticulate and installs PyTorch (the CPU
#' build by default), `numpy<2` (reticulate 1.28 needs it) and the engine. The
#' package uses this virtualenv automatically when `RETICULATE_PYTHON` is not set.
#' Restart R afterwards.
#'
#' @param package Where pip finds the engine: the path of a cellsynth source
#'   checkout, or a pip requirement.
#' @param envname Name of the virtualenv.
#' @param torch pip requirement for PyTorch. `"torch==2.13.0"` is the CPU wheel on
#'   the machines this package is tested on; use your CUDA build's requirement on a
#'   GPU machine.
#' @param python Python used to create the virtualenv (default: reticulate's choice).
#' @return The virtualenv's Python, invisibly.
#' @examples
#' \dontrun{
#' install_cellsynth("~/src/cellsynth")
#' }
#' @export
install_cellsynth <- function(package = "cellsynth", envname = .default_env,
                              torch = "torch==2.13.0", python = NULL) {
  if (!is.null(python)) {
    reticulate::virtualenv_create(envname, python = python)
  } else {
    reticulate::virtualenv_create(envname)
  }
  reticulate::virtualenv_install(envname, c(torch, "numpy<2"))
  reticulate::virtualenv_install(envname, path.expand(package))
  py <- reticulate::virtualenv_python(envname)
  message("cellsynth installed in the virtualenv '", envname, "' (", py, "). Restart R to use it.")
  invisible(py)
}
