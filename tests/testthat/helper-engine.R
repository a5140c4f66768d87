# Skips without the engine; under CELLSYNTH_REQUIRE_ENGINE=1 (make rcheck) fails instead.
skip_if_no_engine <- function() {
  if (!cellsynth_available()) {
    why <- paste("the cellsynth Python engine is not available here:", cellsynth:::.engine_problem())
    if (identical(Sys.getenv("CELLSYNTH_REQUIRE_ENGINE"), "1")) stop("CELLSYNTH_REQUIRE_ENGINE=1, but ", why, call. = FALSE)
    skip(why)
  }
}

# small settings for tests that are about the R plumbing, not about fidelity
FAST <- list(diffusion.steps = 300, encoder.epochs = 40, classifier.steps = 150, discriminator.steps = 100)

# Run R code in a fresh Rscript with extra environment variables; returns its output.
run_rscript <- function(code, env = character()) {
  libs <- paste0("'", .libPaths(), "'", collapse = ", ")
  script <- tempfile(fileext = ".R")
  writeLines(c(sprintf(".libPaths(c(%s))", libs), code), script)
  out <- suppressWarnings(system2(file.path(R.home("bin"), "Rscript"), c("--vanilla", script),
                                  stdout = TRUE, stderr = TRUE, env = env))
  paste(out, collapse = "\n")
}
