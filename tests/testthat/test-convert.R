test_that("Seurat -> AnnData -> Seurat keeps counts, data, names and meta.data exactly", {
  skip_if_no_engine()
  seu <- SeuratObject::pbmc_small
  n <- ncol(seu)
  seu@meta.data$flag <- rep(c(TRUE, FALSE, NA, TRUE), length.out = n)
  seu@meta.data$count <- rep(c(1L, NA, -3L, 2147483647L), length.out = n)
  seu@meta.data$word <- rep(c("a", NA, "b c", ""), length.out = n)
  seu@meta.data$score <- rep(c(0.5, NA, -1e300, 3), length.out = n)
  seu@meta.data$kind <- factor(rep(c("x", NA, "y"), length.out = n), levels = c("y", "x", "unused"))
  seu@meta.data$stage <- factor(rep(c("early", "late"), length.out = n), levels = c("early", "late"), ordered = TRUE)

  ad <- SeuratToAnnData(seu)
  expect_equal(unlist(ad$shape), c(n, nrow(seu)))
  back <- AnnDataToSeurat(ad)

  get <- function(o, what) SeuratObject::GetAssayData(o, slot = what)
  expect_identical(get(back, "counts"), get(seu, "counts"))
  expect_identical(get(back, "data"), get(seu, "data"))
  expect_identical(colnames(back), colnames(seu))
  expect_identical(rownames(back), rownames(seu))
  expect_identical(back[[]], seu[[]])
  meta <- back[[]]
  expect_true(is.na(meta$flag[3]) && is.na(meta$count[2]) && is.na(meta$word[2]) && is.na(meta$kind[2]))
  expect_identical(meta$count[4], 2147483647L)
  expect_identical(levels(meta$kind), c("y", "x", "unused"))
  expect_true(is.ordered(meta$stage))
})

test_that("meta.data columns of other classes are refused with the column named", {
  skip_if_no_engine()
  seu <- SeuratObject::pbmc_small
  seu@meta.data$blob <- I(as.list(seq_len(ncol(seu))))
  expect_error(SeuratToAnnData(seu), "blob")
})
