// PDF documents as text, through `pdftotext` from Debian's poppler-utils (LongLoRA's pdf2txt step, without OCR:
// scanned pages without a text layer give no text). Pages are separated by a blank line.
#pragma once
#include <string>

namespace ll {

// Whether `path` names a PDF: its name ends in .pdf (any case) or its content starts with "%PDF-".
bool is_pdf_file(const std::string& path);

// The text of the PDF at `path`, as UTF-8. Throws naming the file when pdftotext is not installed (saying which
// package brings it), when it fails (its exit status and message), or when the PDF holds no text at all.
std::string pdf_to_text(const std::string& path);

}  // namespace ll
