//! The encoder's CPU attention kernel (`csrc/attention.cpp`) against libtorch's
//! `scaled_dot_product_attention` on the same inputs: head sizes, lengths that are not multiples
//! of its blocks, padding masks, masks with holes, a single query row read in place from a wider
//! tensor, and a sequence with every key masked out.

use labelfleet_slm::attention;
use tch::{Kind, Tensor};

fn reference(q: &Tensor, k: &Tensor, v: &Tensor, mask: &Tensor, heads: i64) -> Tensor {
    let (b, r, w) = q.size3().unwrap();
    let t = k.size()[1];
    let hd = w / heads;
    let split = |y: &Tensor, len: i64| y.reshape([b, len, heads, hd]).transpose(1, 2);
    Tensor::scaled_dot_product_attention(
        &split(q, r),
        &split(k, t),
        &split(v, t),
        Some(&mask.view([b, 1, 1, t])),
        0.0,
        false,
        None,
        false,
    )
    .transpose(1, 2)
    .reshape([b, r, w])
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// A prefix mask of the given lengths: `[B, T]` bool.
fn prefix_mask(lens: &[i64], t: i64) -> Tensor {
    let lens = Tensor::from_slice(lens).unsqueeze(1);
    Tensor::arange(t, (Kind::Int64, tch::Device::Cpu))
        .unsqueeze(0)
        .lt_tensor(&lens)
}

/// Whether the kernel runs here; it must exactly when the processor has AVX-512.
fn kernel_runs_here() -> bool {
    #[cfg(target_arch = "x86_64")]
    assert_eq!(
        attention::available(),
        std::arch::is_x86_feature_detected!("avx512f")
    );
    if !attention::available() {
        eprintln!("no AVX-512 on this processor: the kernel is not used, nothing to compare");
    }
    attention::available()
}

#[test]
fn matches_libtorch_across_head_sizes_lengths_and_padding() {
    if !kernel_runs_here() {
        return;
    }
    tch::manual_seed(7);
    let _guard = tch::no_grad_guard();
    for (heads, head_dim) in [(12, 32), (4, 16), (6, 64)] {
        for (t, lens) in [
            (1, vec![1, 1]),
            (17, vec![17, 5, 1]),
            (64, vec![64, 63]),
            (258, vec![258, 200, 129, 65, 3]),
            (300, vec![300, 1]),
        ] {
            let b = lens.len() as i64;
            let w = heads * head_dim;
            let q = Tensor::randn([b, t, w], (Kind::Float, tch::Device::Cpu)) * 2.0;
            let k = Tensor::randn([b, t, w], (Kind::Float, tch::Device::Cpu)) * 2.0;
            let v = Tensor::randn([b, t, w], (Kind::Float, tch::Device::Cpu));
            let mask = prefix_mask(&lens, t);
            let ours = attention::forward(&q, &k, &v, &mask, heads as usize).unwrap();
            let theirs = reference(&q, &k, &v, &mask, heads);
            let d = max_diff(&ours, &theirs);
            assert!(
                d <= 2e-5,
                "heads {heads}x{head_dim}, T {t}, lengths {lens:?}: max |diff| {d}"
            );
        }
    }
}

#[test]
fn one_query_row_read_in_place_and_a_mask_with_holes() {
    if !kernel_runs_here() {
        return;
    }
    tch::manual_seed(11);
    let _guard = tch::no_grad_guard();
    let (b, t, heads, w) = (3, 90, 12, 384);
    let x = Tensor::randn([b, t, w], (Kind::Float, tch::Device::Cpu));
    let k = Tensor::randn([b, t, w], (Kind::Float, tch::Device::Cpu));
    let v = Tensor::randn([b, t, w], (Kind::Float, tch::Device::Cpu));
    // every third key masked out, and the last sequence padded after 40
    let holes = Tensor::arange(t, (Kind::Int64, tch::Device::Cpu))
        .remainder(3)
        .ne(0)
        .unsqueeze(0)
        .repeat([b, 1]);
    let mask = holes.logical_and(&prefix_mask(&[90, 90, 40], t));
    let first = x.narrow(1, 0, 1);
    assert!(!first.is_contiguous());
    let ours = attention::forward(&first, &k, &v, &mask, heads).unwrap();
    let theirs = reference(&first.contiguous(), &k, &v, &mask, heads as i64);
    assert_eq!(ours.size(), vec![b, 1, w]);
    let d = max_diff(&ours, &theirs);
    assert!(d <= 2e-5, "max |diff| {d}");
}

#[test]
fn a_sequence_with_no_key_to_attend_gives_zeros_and_bad_shapes_are_refused() {
    if !kernel_runs_here() {
        return;
    }
    let _guard = tch::no_grad_guard();
    let q = Tensor::randn([2, 5, 64], (Kind::Float, tch::Device::Cpu));
    let mask = prefix_mask(&[5, 0], 5);
    let out = attention::forward(&q, &q, &q, &mask, 2).unwrap();
    assert_eq!(out.get(1).abs().max().double_value(&[]), 0.0);
    assert!(out.get(0).abs().max().double_value(&[]) > 0.0);
    let err = attention::forward(&q, &q, &q, &mask, 3)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a multiple of 3 heads"), "{err}");
    let err = attention::forward(&q, &q, &q, &prefix_mask(&[5], 5), 2)
        .unwrap_err()
        .to_string();
    assert!(err.contains("key_mask"), "{err}");
}

#[test]
fn training_and_unsupported_head_sizes_take_libtorch() {
    let q = Tensor::randn([1, 4, 96], (Kind::Float, tch::Device::Cpu));
    assert!(!attention::applies(&q, 48, 0.0), "head size 48");
    assert!(!attention::applies(&q, 32, 0.1), "dropout");
    let q = q.set_requires_grad(true);
    assert!(!attention::applies(&q, 32, 0.0), "autograd on");
    let _guard = tch::no_grad_guard();
    assert_eq!(attention::applies(&q, 32, 0.0), attention::available());
}
