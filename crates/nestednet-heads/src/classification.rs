use burn::prelude::*;
use burn::tensor::activation::log_softmax;

/// Mean cross-entropy of `logits` (`[batch, classes]`) against class indices `targets`
/// (`[batch]`), computed stably through `log_softmax`.
pub fn cross_entropy(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    let [batch, classes] = logits.dims();
    let [n] = targets.dims();
    assert_eq!(n, batch, "cross_entropy: {batch} rows of logits but {n} targets");
    assert!(classes > 0, "cross_entropy: logits have no class");
    log_softmax(logits, 1).gather(1, targets.reshape([batch, 1])).mean().neg()
}

/// Number of rows whose arg-max equals the target (a scalar integer tensor, left on the device
/// so that accumulating it costs no synchronisation).
pub fn correct_count(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1, Int> {
    let predicted = logits.argmax(1).squeeze_dim::<1>(1);
    // Backends differ in the integer type `argmax` returns (ndarray: i32), while labels are
    // built from i64 data: compare in one type, or ndarray refuses the comparison.
    let targets = targets.cast(predicted.dtype());
    predicted.equal(targets).int().sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_entropy_matches_hand_computation() {
        let device = Device::flex();
        let logits = Tensor::<2>::from_floats([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], &device);
        let targets = Tensor::<1, Int>::from_data([2, 0], &device);
        let lse = (1f32.exp() + 2f32.exp() + 3f32.exp()).ln();
        let expected = ((lse - 3.0) + 3f32.ln()) / 2.0;
        let got = cross_entropy(logits.clone(), targets.clone()).into_scalar::<f32>();
        assert!((got - expected).abs() < 1e-6, "{got} vs {expected}");
        assert_eq!(correct_count(logits, targets).into_scalar::<i64>(), 2);
    }
}
