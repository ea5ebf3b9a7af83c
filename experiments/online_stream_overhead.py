"""Why the online protocol trains each task in one epoch of small mini-batches rather than on
Avalanche's ``split_online_stream`` (one experience per mini-batch): wall time per mini-batch on
split digits, 3 tasks, Naive + ReplayPlugin (10 stream + 10 memory samples), small_cnn, one thread.

    nice -n 15 python experiments/online_stream_overhead.py

(A fixed linear head: Avalanche 0.6's IncrementalClassifier cannot adapt to an ``OnlineCLExperience``,
which has no ``classes_in_this_experience``.)
"""
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
warnings.simplefilter("ignore")
torch.set_num_threads(1)
from torch.nn import CrossEntropyLoss
from avalanche.training import Naive
from avalanche.training.plugins import ReplayPlugin, EvaluationPlugin
from avalanche.training.storage_policy import ClassBalancedBuffer
from avalanche.benchmarks.scenarios.online import split_online_stream
from bsce_avalanche.runner.config import ExperimentConfig
from bsce_avalanche.runner.experiment import build_benchmark, build_model

cfg = ExperimentConfig(incremental_head=False, benchmark="digits", n_steps=5, class_order="natural", model="small_cnn", wandb=False)
bench = build_benchmark(cfg)
def strat():
    torch.manual_seed(0)
    model = build_model(cfg, 10)
    return Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05), criterion=CrossEntropyLoss(),
                 train_mb_size=10, train_epochs=1, evaluator=EvaluationPlugin(loggers=[]),
                 plugins=[ReplayPlugin(200, batch_size=10, batch_size_mem=10,
                                       storage_policy=ClassBalancedBuffer(200, adaptive_size=True))])
stream = bench.train_stream[:3]
n_batches = sum((len(e.dataset) + 9) // 10 for e in stream)
s = strat(); t = time.perf_counter()
for e in stream: s.train(e)
epoch = (time.perf_counter() - t) / n_batches
s = strat(); t = time.perf_counter(); n = 0
for e in split_online_stream(stream, experience_size=10, shuffle=True):
    s.train(e); n += 1
online = (time.perf_counter() - t) / n
print(f"{n_batches} vs {n} mini-batches; per mini-batch: one-epoch experiences {epoch*1e3:.1f} ms, "
      f"split_online_stream {online*1e3:.1f} ms, ratio {online/epoch:.1f}")
