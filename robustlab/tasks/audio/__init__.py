"""Voice: spoken words synthesised with espeak-ng (and WAV folders), a log-mel CNN with its front end
inside the model, waveform threats bounded in dB relative to the clip or by SNR; every attack,
evaluation and training method from the shared engine."""
from .attacks import (ATTACK_NAMES, DEFENCES, OneRow, OverTheAir, attack_clips, build_attack, defended, downsample,
                      low_pass, over_the_air, quantise)
from .metrics import accuracy, audio_metrics, perturbation_metrics, predict
from .model import KeywordCNN, LogMel, mel_filterbank
from .pretrained import ADVERSARIAL, STANDARD, KWSSetup, load_kws, pretrained_kws, save_kws, train_kws
from .speech import (PEAK, RATE, WORDS, EspeakUnavailable, SpeechSetup, augment, espeak_status, fit_clip,
                     room_impulse_response, speak, speech_commands, voices, wav_folder)
from .threats import RelativeThreat, audio_threat, db, db_eps, db_relative, snr, snr_eps, within_bound

__all__ = ["ADVERSARIAL", "ATTACK_NAMES", "DEFENCES", "PEAK", "RATE", "STANDARD", "WORDS", "EspeakUnavailable",
           "KWSSetup", "KeywordCNN", "LogMel", "OneRow", "OverTheAir", "RelativeThreat", "SpeechSetup", "accuracy",
           "attack_clips", "audio_metrics", "audio_threat", "augment", "build_attack", "db", "db_eps", "db_relative",
           "defended", "downsample", "espeak_status", "fit_clip", "load_kws", "low_pass", "mel_filterbank",
           "over_the_air", "perturbation_metrics", "predict", "pretrained_kws", "quantise",
           "room_impulse_response", "save_kws", "snr", "snr_eps", "speak", "speech_commands", "train_kws", "voices",
           "wav_folder", "within_bound"]
