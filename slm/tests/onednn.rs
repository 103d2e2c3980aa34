//! fp32 linear layers through oneDNN with packed weights: the same values as libtorch's
//! `linear` (with and without a fused GELU), used only without autograd, and never stale after
//! the weights change.

use labelfleet_slm::layers::Linear;
use labelfleet_slm::onednn::{self, Fused, PackedLinear};
use tch::{nn, Device, Kind, Tensor};

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

fn layer(vs: &nn::VarStore) -> Linear {
    tch::manual_seed(3);
    let lin = Linear::new(vs.root() / "lin", 384, 1536, true, 0.05);
    tch::no_grad(|| {
        let _ = lin
            .bias
            .as_ref()
            .unwrap()
            .shallow_clone()
            .uniform_(-0.1, 0.1);
    });
    lin
}

#[test]
fn onednn_ops_are_registered() {
    assert!(
        onednn::available(),
        "this libtorch lacks mkldnn::_linear_pointwise"
    );
}

#[test]
fn packed_linear_matches_libtorch() {
    let vs = nn::VarStore::new(Device::Cpu);
    let lin = layer(&vs);
    let x = Tensor::randn([3, 57, 384], (Kind::Float, Device::Cpu));
    let dense = x.linear(&lin.weight, lin.bias.as_ref());
    let packed = PackedLinear::pack(&lin.weight).unwrap();
    for (act, want) in [
        (Fused::None, dense.shallow_clone()),
        (Fused::Gelu, dense.gelu("none")),
        (Fused::GeluTanh, dense.gelu("tanh")),
    ] {
        let got = tch::no_grad(|| packed.forward(&x, lin.bias.as_ref(), act)).unwrap();
        assert_eq!(got.size(), vec![3, 57, 1536]);
        let d = max_diff(&got, &want);
        assert!(d < 1e-4, "{act:?}: max |diff| {d}");
        // the layer takes the same path under no_grad
        let via_layer = tch::no_grad(|| lin.forward_fused(&x, act));
        assert!(max_diff(&via_layer, &want) < 1e-4, "{act:?} via the layer");
    }
}

#[test]
fn autograd_takes_the_dense_path_and_gets_gradients() {
    let vs = nn::VarStore::new(Device::Cpu);
    let lin = layer(&vs);
    let x = Tensor::randn([4, 384], (Kind::Float, Device::Cpu));
    assert!(onednn::grad_enabled());
    assert!(!onednn::applies(&x, &lin.weight), "autograd is on");
    let y = lin.forward(&x);
    assert!(y.requires_grad());
    y.sum(Kind::Float).backward();
    assert!(lin.weight.grad().defined());
    assert!(tch::no_grad(|| onednn::applies(&x, &lin.weight)));
}

#[test]
fn a_changed_weight_is_packed_again() {
    let vs = nn::VarStore::new(Device::Cpu);
    let lin = layer(&vs);
    let x = Tensor::randn([8, 384], (Kind::Float, Device::Cpu));
    let before = tch::no_grad(|| lin.forward(&x));
    // an optimizer step updates the weight in place
    tch::no_grad(|| {
        let _ = lin.weight.shallow_clone().g_add_scalar_(0.5);
    });
    let after = tch::no_grad(|| lin.forward(&x));
    let want = x.linear(&lin.weight, lin.bias.as_ref());
    assert!(max_diff(&after, &want) < 1e-4, "stale packed weight");
    assert!(max_diff(&after, &before) > 1.0);
}

#[test]
fn an_optimizer_step_is_seen_by_the_next_graded_call() {
    use tch::nn::OptimizerConfig;
    let vs = nn::VarStore::new(Device::Cpu);
    let lin = layer(&vs);
    let mut opt = nn::AdamW::default().build(&vs, 1e-2).unwrap();
    let x = Tensor::randn([8, 384], (Kind::Float, Device::Cpu));
    let before = tch::no_grad(|| lin.forward(&x)); // packs the weight
    for _ in 0..3 {
        opt.zero_grad();
        lin.forward(&x)
            .pow_tensor_scalar(2)
            .sum(Kind::Float)
            .backward();
        opt.step();
    }
    let after = tch::no_grad(|| lin.forward(&x));
    let want = tch::no_grad(|| x.linear(&lin.weight, lin.bias.as_ref()));
    assert!(
        max_diff(&after, &want) < 1e-4,
        "stale packed weight after AdamW steps"
    );
    assert!(
        max_diff(&after, &before) > 1e-2,
        "the steps moved the weight"
    );
}
