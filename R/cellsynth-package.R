# cellsynth R front end.
#
# The Seurat functions (TrainCellSynth, GenerateCells, InterpolateCells,
# PredictPerturbation, EvaluateCells) are tracked in the R package issue and are
# not written yet; the Python engine (python/cellsynth) is usable today from
# reticulate: reticulate::import("cellsynth").
NULL
