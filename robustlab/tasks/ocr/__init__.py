"""OCR: rendered and scanned text lines, a CRNN+CTC recogniser trained here, Tesseract 5 as a
black-box oracle, sequence objectives, text masks and metrics; attacks run through the shared engine."""
from .attacks import attack_lines, build_attack, transfer_to
from .masks import edge_mask, stroke_mask, text_mask, text_threat, watermark_mask
from .metrics import attack_metrics, cer, ocr_metrics, wer
from .model import CRNN, ctc_log_likelihood, greedy_decode
from .objectives import TextTargeted, TextUntargeted, change_one_word, targeted_pairs, texts_of
from .pretrained import CRNNSetup, load_crnn, pretrained_crnn, pretrained_ensemble
from .render import CHARSET, LineDataset, render_lines, scanned_lines, synthetic_lines
from .tesseract import Reading, TesseractOracle, TesseractUnavailable, tesseract_status
from .train import evaluate_crnn, read, train_crnn

__all__ = ["CHARSET", "CRNN", "CRNNSetup", "LineDataset", "Reading", "TesseractOracle", "TesseractUnavailable",
           "TextTargeted", "TextUntargeted", "attack_lines", "attack_metrics", "build_attack", "cer", "change_one_word",
           "ctc_log_likelihood", "edge_mask", "evaluate_crnn", "greedy_decode", "load_crnn", "ocr_metrics",
           "pretrained_crnn", "pretrained_ensemble", "read", "render_lines", "scanned_lines", "stroke_mask",
           "synthetic_lines", "targeted_pairs", "tesseract_status", "text_mask", "text_threat", "texts_of", "train_crnn",
           "transfer_to", "watermark_mask", "wer"]
