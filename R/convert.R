# Seurat <-> AnnData at the R/Python boundary.
#
# Nothing crosses as a sparse matrix or as a vector holding NA: reticulate 1.28
# cannot convert scipy sparse back to R, turns a logical NA into TRUE and an
# integer NA into -2147483648. Matrices cross as their CSC/CSR arrays, meta.data
# columns as values + a missing-value mask + their kind (see
# python/cellsynth/io/rbridge.py, the other half).

.seurat5 <- function() utils::packageVersion("SeuratObject") >= "5.0.0"

.check_seurat <- function(object, what = "object") {
  if (!inherits(object, "Seurat")) {
    stop(what, " must be a Seurat object, not ", class(object)[1], ".", call. = FALSE)
  }
}

.check_assay <- function(object, assay) {
  assay <- assay %||% SeuratObject::DefaultAssay(object)
  if (!assay %in% SeuratObject::Assays(object)) {
    stop("assay '", assay, "' is not in the object; it has: ",
         paste(SeuratObject::Assays(object), collapse = ", "), ".", call. = FALSE)
  }
  assay
}

# counts / data of an assay as a dgCMatrix, NULL when the assay has none
.get_matrix <- function(object, assay, what) {
  if (.seurat5()) {
    layers <- getExportedValue("SeuratObject", "Layers")(object[[assay]])
    if (!what %in% layers) {
      if (any(startsWith(layers, paste0(what, ".")))) {
        stop("the '", what, "' layer of assay '", assay, "' is split (",
             paste(layers[startsWith(layers, what)], collapse = ", "),
             "); run object <- JoinLayers(object) first.", call. = FALSE)
      }
      return(NULL)
    }
    m <- getExportedValue("SeuratObject", "LayerData")(object, assay = assay, layer = what)
  } else {
    m <- SeuratObject::GetAssayData(object, slot = what, assay = assay)
  }
  if (!identical(dim(m), dim(object[[assay]]))) return(NULL)
  if (!methods::is(m, "dgCMatrix")) {
    m <- methods::as(methods::as(methods::as(m, "CsparseMatrix"), "generalMatrix"), "dMatrix")
  }
  m
}

.set_data <- function(object, assay, m) {
  if (.seurat5()) {
    SeuratObject::SetAssayData(object, layer = "data", new.data = m, assay = assay)
  } else {
    SeuratObject::SetAssayData(object, slot = "data", new.data = m, assay = assay)
  }
}

.sparse_parts <- function(m) {
  if (is.null(m)) return(NULL)
  list(x = reticulate::np_array(m@x, dtype = "float64"),
       i = reticulate::np_array(m@i, dtype = "int32"),
       p = reticulate::np_array(m@p, dtype = "int64"))
}

.column_parts <- function(v, name) {
  na <- is.na(v)
  if (inherits(v, c("Date", "POSIXt"))) v <- as.character(v)
  base <- list(na = reticulate::np_array(na, dtype = "bool"))
  if (is.factor(v)) {
    codes <- as.integer(v)
    codes[na] <- 0L
    return(c(base, list(kind = "factor", values = reticulate::np_array(codes, dtype = "int32"),
                        levels = as.list(levels(v)), ordered = is.ordered(v))))
  }
  if (is.logical(v)) {
    return(c(base, list(kind = "logical", values = reticulate::np_array(ifelse(na, 0L, as.integer(v)), dtype = "int32"))))
  }
  if (is.integer(v)) {
    return(c(base, list(kind = "integer", values = reticulate::np_array(ifelse(na, 0L, v), dtype = "int32"))))
  }
  if (is.double(v)) {
    return(c(base, list(kind = "double", values = reticulate::np_array(v, dtype = "float64"))))
  }
  if (is.character(v)) {
    return(c(base, list(kind = "character", values = as.list(ifelse(na, "", v)))))
  }
  stop("meta.data column '", name, "' is of class ", class(v)[1],
       "; only factor, logical, integer, numeric and character columns can be converted.", call. = FALSE)
}

.column_from_parts <- function(p) {
  na <- as.logical(as.vector(p$na))
  v <- as.vector(p$values)
  x <- switch(p$kind,
    factor = {
      lev <- as.character(unlist(p$levels))
      codes <- as.integer(v)
      codes[na] <- NA_integer_
      structure(codes, levels = lev, class = c(if (isTRUE(p$ordered)) "ordered", "factor"))
    },
    logical = as.logical(as.integer(v)),
    integer = as.integer(v),
    double = as.double(v),
    character = as.character(unlist(v)),
    stop("unknown column kind ", p$kind, call. = FALSE)
  )
  if (!is.factor(x)) x[na] <- NA
  x
}

.as_anndata <- function(object, assay = NULL, columns = NULL) {
  .check_seurat(object)
  assay <- .check_assay(object, assay)
  counts <- .get_matrix(object, assay, "counts")
  data <- .get_matrix(object, assay, "data")
  if (is.null(counts) && is.null(data)) {
    stop("assay '", assay, "' has neither counts nor data.", call. = FALSE)
  }
  meta <- object[[]]
  if (!is.null(columns)) meta <- meta[, columns, drop = FALSE]
  obs <- stats::setNames(lapply(names(meta), function(n) .column_parts(meta[[n]], n)), names(meta))
  eng <- .engine()
  .py(eng$rbridge$anndata_from_r(
    counts = .sparse_parts(counts), data = .sparse_parts(data),
    cells = as.list(colnames(object)), genes = as.list(rownames(object[[assay]])), obs = obs
  ))
}

.as_dgc <- function(p, genes, cells) {
  methods::new("dgCMatrix",
    i = as.integer(as.vector(p$i)), p = as.integer(as.vector(p$p)), x = as.double(as.vector(p$x)),
    Dim = c(length(genes), length(cells)), Dimnames = list(genes, cells))
}

.as_seurat <- function(adata, assay = "RNA", project = "cellsynth") {
  parts <- .py(.engine()$rbridge$anndata_to_r(adata))
  cells <- as.character(as.vector(parts$cells))
  genes <- as.character(as.vector(parts$genes))
  counts <- if (!is.null(parts$counts)) .as_dgc(parts$counts, genes, cells)
  data <- .as_dgc(parts$data, genes, cells)
  if (!is.null(counts)) {
    object <- SeuratObject::CreateSeuratObject(counts = counts, assay = assay, project = project)
    object <- .set_data(object, assay, data)
  } else {
    object <- SeuratObject::CreateSeuratObject(SeuratObject::CreateAssayObject(data = data), assay = assay, project = project)
  }
  meta <- data.frame(row.names = cells)
  for (n in names(parts$obs)) meta[[n]] <- .column_from_parts(parts$obs[[n]])
  extra <- setdiff(names(object[[]]), names(meta))
  methods::slot(object, "meta.data") <- if (length(extra)) cbind(object[[]][extra], meta) else meta
  object
}

#' Convert between Seurat and AnnData
#'
#' `SeuratToAnnData()` gives a Python `anndata.AnnData` (through reticulate) with
#' the log-normalised `data` in `X`, the `counts` in `layers['counts']` and
#' `meta.data` in `obs` (factors become categoricals; `NA` stays missing: logical
#' and integer columns become pandas' nullable types). `AnnDataToSeurat()` is the
#' inverse: a round trip keeps counts, data, cell and gene names and `meta.data`
#' exactly (a numeric `NaN` comes back as `NA`).
#'
#' @param object A Seurat object.
#' @param assay Assay to convert (default: the default assay).
#' @param adata A Python AnnData (from reticulate).
#' @param project Project name of the new Seurat object.
#' @return An AnnData (Python object) or a Seurat object.
#' @examples
#' if (cellsynth_available()) {
#'   ad <- SeuratToAnnData(SeuratObject::pbmc_small)
#'   back <- AnnDataToSeurat(ad)
#' }
#' @export
SeuratToAnnData <- function(object, assay = NULL) {
  .as_anndata(object, assay)
}

#' @rdname SeuratToAnnData
#' @export
AnnDataToSeurat <- function(adata, assay = "RNA", project = "cellsynth") {
  .as_seurat(adata, assay = assay, project = project)
}
