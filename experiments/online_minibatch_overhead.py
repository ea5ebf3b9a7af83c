"""The cost of the online protocol's one train() per mini-batch on the real CIFAR-100 shape: N mini-batches of task 1
(10 stream + 10 memory, ResNet-8 width 8, one thread, batch crop + flip) trained as one experience (ReplayPlugin over
a class-balanced memory of 2000, the earlier protocol) and as N experiences of split_online_stream (ReplayPlugin
over a ReservoirSamplingBuffer of 2000 filled with task 0: the runner's online: true), two interleaved rounds.

    nice -n 15 python experiments/online_minibatch_overhead.py [N=200] [DATA_DIR=/work/shared/data/cifar100]
"""
import sys, time, warnings
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
warnings.simplefilter("ignore")
import torch
torch.set_num_threads(1)
from torch.nn import CrossEntropyLoss
from avalanche.training import Naive
from avalanche.training.plugins import ReplayPlugin, EvaluationPlugin
from avalanche.training.storage_policy import ClassBalancedBuffer, ReservoirSamplingBuffer
from avalanche.benchmarks.scenarios.online import split_online_stream
from avalanche.evaluation.metrics import accuracy_metrics, loss_metrics
from bsce_avalanche.benchmarks import BatchAugmentPlugin
from bsce_avalanche.runner.config import ExperimentConfig
from bsce_avalanche.runner.experiment import build_benchmark, build_model
N = int(sys.argv[1]) if len(sys.argv) > 1 else 200
cfg = ExperimentConfig(benchmark="cifar100", n_steps=10, model="resnet8", width=8, data_dir=sys.argv[2] if len(sys.argv) > 2 else "/work/shared/data/cifar100", wandb=False, batch_size=10)
t = time.perf_counter(); bench = build_benchmark(cfg); print("bench", time.perf_counter() - t)
e0, e1 = bench.train_stream[0], bench.train_stream[1]
sub = e1.dataset.subset(torch.randperm(len(e1.dataset))[: 10 * N].tolist())
def strat(buffer):
    torch.manual_seed(0)
    model = build_model(cfg, 100)
    ev = EvaluationPlugin(accuracy_metrics(experience=True, stream=True), loss_metrics(experience=True, stream=True), loggers=[])
    s = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), criterion=CrossEntropyLoss(),
              train_mb_size=10, train_epochs=1, evaluator=ev, eval_mb_size=500,
              plugins=[BatchAugmentPlugin(), ReplayPlugin(2000, batch_size=10, batch_size_mem=10, storage_policy=buffer)])
    return s
import copy
def old():
    s = strat(ClassBalancedBuffer(2000, adaptive_size=True)); s.train(e0)   # not timed? timed separately
    e = copy.copy(e1); e.dataset = sub
    t = time.perf_counter(); s.train(e); return (time.perf_counter() - t) / N
def new():
    buf = ReservoirSamplingBuffer(2000)
    s = strat(buf)
    buf.update_from_dataset(e0.dataset)  # steady-state buffer of 2000
    s.model.classifier.adaptation(e0)  # head knows task 0
    e = copy.copy(e1); e.dataset = sub
    stream = split_online_stream([e], experience_size=10, shuffle=True, seed=0)
    t = time.perf_counter(); n = 0; tu = 0
    for x in stream:
        x.classes_in_this_experience = sorted(map(int, x.dataset.targets.uniques))
        s.train(x); n += 1
    return (time.perf_counter() - t) / n
for r in range(2):
    a = old(); b = new()
    print(f"round {r}: one train() {a*1e3:.1f} ms/mb, per-minibatch train() {b*1e3:.1f} ms/mb, ratio {b/a:.2f}", flush=True)
