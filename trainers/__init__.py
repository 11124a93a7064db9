"""How one candidate is judged: data, proxy training and measurement."""

from .data import DATASETS, DataError, ImageData, load_dataset
from .measure import count_flops, count_params, measure_throughput, peak_memory, resolve_device
from .proxy import NonFiniteLossError, ProxyConfig, TrialResult, evaluate_architecture, train_proxy

__all__ = [
    "DATASETS", "DataError", "ImageData", "load_dataset", "count_flops", "count_params", "measure_throughput",
    "peak_memory", "resolve_device", "NonFiniteLossError", "ProxyConfig", "TrialResult", "evaluate_architecture",
    "train_proxy",
]
