#' Grade synthetic cells against real ones
#'
#' Compares the counts of `generated` with those of `real` using the engine's
#' metrics (`cellsynth.metrics`): random-forest and 5-NN AUC of real vs generated
#' (0.5 = indistinguishable), iLISI (1 = fully mixed), Spearman correlation of
#' per-gene means and multi-scale MMD, all on 50 PCs fit on both sets. Each figure
#' comes with a positive control: the real cells are split in two halves (stratified
#' at random with `seed.use`), one half is graded against the other, and the
#' synthetic cells are graded against the same half.
#'
#' @param real,generated Seurat objects with counts (shared features are used).
#' @param assay Assay of both (default: their default assays).
#' @param n.pcs Number of principal components.
#' @param seed.use Seed of the split, PCA and classifiers.
#' @param plot Also return a ggplot of the table.
#' @param report Path of an HTML report to write (self-contained, figures embedded):
#'   the metric table next to the control, UMAP of real and generated cells, per-gene
#'   mean, variance and detection rate, library sizes, marker genes per label and
#'   memorisation. `NULL`: no report.
#' @param group.by `meta.data` column of labels for the report (UMAP by label, markers
#'   per label); generated cells without it get labels transferred from the real cells.
#' @return A list: `metrics`, a data.frame with one row per metric (`generated`,
#'   `real.vs.real`, `best` = the value of indistinguishable sets), and `plot`.
#' @examples
#' if (cellsynth_available()) {
#'   seu <- SeuratObject::pbmc_small
#'   syn <- GenerateCells(seu, hyperparameters = list(diffusion.steps = 300, encoder.epochs = 30))
#'   ev <- EvaluateCells(seu, syn)
#'   ev$metrics
#' }
#' @export
EvaluateCells <- function(real, generated, assay = NULL, n.pcs = 50, seed.use = 0, plot = TRUE,
                          report = NULL, group.by = NULL) {
  .check_seurat(real, "real")
  .check_seurat(generated, "generated")
  a1 <- .check_assay(real, assay)
  a2 <- .check_assay(generated, assay)
  genes <- intersect(rownames(real[[a1]]), rownames(generated[[a2]]))
  if (length(genes) < 2) stop("real and generated share ", length(genes), " features; they must share the gene list.", call. = FALSE)
  rc <- .get_matrix(real, a1, "counts")
  gc <- .get_matrix(generated, a2, "counts")
  if (is.null(rc) || is.null(gc)) stop("EvaluateCells grades counts; ", if (is.null(rc)) "real" else "generated", " has no counts in assay '", if (is.null(rc)) a1 else a2, "'.", call. = FALSE)
  if (ncol(real) < 10) stop("real has ", ncol(real), " cells; at least 10 are needed to split it into two halves.", call. = FALSE)
  set.seed(seed.use)
  half <- sample(rep_len(c(TRUE, FALSE), ncol(real)))
  t_csr <- function(m) Matrix::t(m[genes, , drop = FALSE])
  eng <- .engine()
  rep <- .py(eng$fidelity$fidelity(t_csr(rc[, half, drop = FALSE]), t_csr(gc), t_csr(rc[, !half, drop = FALSE]),
                                    n_pcs = as.integer(n.pcs), seed = as.integer(seed.use)))
  keys <- c(rf_auc = 0.5, knn_auc = 0.5, ilisi = 1, spearman_gene_means = 1, mmd = 0)
  metrics <- data.frame(
    metric = names(keys),
    generated = vapply(names(keys), function(k) as.numeric(rep$generated[[k]]), numeric(1)),
    real.vs.real = vapply(names(keys), function(k) as.numeric(rep$control[[k]]), numeric(1)),
    best = unname(keys), row.names = NULL
  )
  out <- list(metrics = metrics, plot = NULL, report = NULL)
  if (!is.null(report)) {
    if (!is.null(group.by) && !(group.by %in% colnames(real[[]]))) {
      stop("group.by '", group.by, "' is not a meta.data column of real.", call. = FALSE)
    }
    cols <- if (is.null(group.by)) character(0) else group.by
    ad_real <- .as_anndata(real[genes, !half], a1, columns = cols)
    ad_train <- .as_anndata(real[genes, half], a1, columns = cols)
    ad_gen <- .as_anndata(generated[genes, ], a2, columns = intersect(cols, colnames(generated[[]])))
    out$report <- .py(eng$report$write_report(report, ad_real, ad_gen, rep, train = ad_train, label = group.by,
                                              seed = as.integer(seed.use)))
    out$report <- normalizePath(report)
  }
  if (plot) {
    long <- data.frame(
      metric = factor(rep(metrics$metric, 2), levels = rev(metrics$metric)),
      value = c(metrics$generated, metrics$real.vs.real),
      comparison = rep(c("generated vs real", "real vs real"), each = nrow(metrics))
    )
    out$plot <- ggplot2::ggplot(long, ggplot2::aes(x = .data$value, y = .data$metric, colour = .data$comparison)) +
      ggplot2::geom_point(size = 3) +
      ggplot2::facet_wrap(~metric, scales = "free", ncol = 1) +
      ggplot2::labs(x = NULL, y = NULL, colour = NULL, title = "cellsynth: synthetic vs real cells") +
      ggplot2::theme_bw() + ggplot2::theme(axis.text.y = ggplot2::element_blank(), axis.ticks.y = ggplot2::element_blank())
  }
  out
}
