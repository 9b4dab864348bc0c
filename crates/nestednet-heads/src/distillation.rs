use burn::prelude::*;
use burn::tensor::activation::{log_softmax, softmax};

/// The teacher's softened class probabilities `softmax(z / T)`, detached: a student learns
/// from them, the teacher is not moved by the student's loss.
pub fn soft_targets(teacher_logits: Tensor<2>, temperature: f64) -> Tensor<2> {
    assert!(temperature > 0.0, "soft_targets: temperature {temperature} must be positive");
    softmax(teacher_logits.detach().div_scalar(temperature), 1)
}

/// Knowledge-distillation loss (Hinton et al.): `T² · KL(p_teacher ‖ softmax(z_student / T))`
/// with batch-mean reduction (the KL is summed over classes and averaged over the batch).
///
/// `teacher_probs` (`[batch, classes]`) are the teacher's probabilities at temperature `T`
/// (see [`soft_targets`]), already mapped to the student's classes when the student predicts
/// coarser classes. The `T²` factor keeps the gradient's scale independent of `T`, so the
/// distillation term and the cross-entropy can be weighed against each other at any `T`.
pub fn distillation_loss(student_logits: Tensor<2>, teacher_probs: Tensor<2>, temperature: f64) -> Tensor<1> {
    assert!(temperature > 0.0, "distillation_loss: temperature {temperature} must be positive");
    let [batch, classes] = student_logits.dims();
    let [t_batch, t_classes] = teacher_probs.dims();
    assert_eq!(
        [batch, classes],
        [t_batch, t_classes],
        "distillation_loss: student logits {batch}x{classes} but teacher probabilities {t_batch}x{t_classes}"
    );
    let student_log = log_softmax(student_logits.div_scalar(temperature), 1);
    // p · ln p is 0 at p = 0; the clamp only keeps ln finite there.
    let teacher_log = teacher_probs.clone().clamp_min(1e-12).log();
    let kl = (teacher_probs * (teacher_log - student_log)).sum().div_scalar(batch as f64);
    kl.mul_scalar(temperature * temperature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kl_matches_hand_computation_and_vanishes_on_the_teacher() {
        let device = Device::flex();
        let t = 2.0;
        let student = Tensor::<2>::from_floats([[1.0, 0.0], [0.0, 0.0]], &device);
        let teacher_probs = Tensor::<2>::from_floats([[0.25, 0.75], [0.5, 0.5]], &device);
        let q = |z0: f32, z1: f32| {
            let (a, b) = ((z0 / 2.0).exp(), (z1 / 2.0).exp());
            (a / (a + b), b / (a + b))
        };
        let (q0, q1) = q(1.0, 0.0);
        let row0 = 0.25 * (0.25f32 / q0).ln() + 0.75 * (0.75f32 / q1).ln();
        let expected = 4.0 * row0 / 2.0; // second row: student = teacher, KL 0
        let got = distillation_loss(student.clone(), teacher_probs, t).into_scalar::<f32>();
        assert!((got - expected).abs() < 1e-6, "{got} vs {expected}");
        let own = soft_targets(student.clone(), t);
        assert!(distillation_loss(student, own, t).into_scalar::<f32>().abs() < 1e-6);
    }

    /// The gradient reaches the student only, and at T it equals `T · (q − p) / batch`.
    #[test]
    fn gradient_flows_to_the_student_only() {
        let device = Device::flex().autodiff();
        let student = Tensor::<2>::from_floats([[1.0, 0.0]], &device).require_grad();
        let teacher = Tensor::<2>::from_floats([[0.0, 2.0]], &device).require_grad();
        let t = 3.0;
        let loss = distillation_loss(student.clone(), soft_targets(teacher.clone(), t), t);
        let grads = loss.backward();
        assert!(teacher.grad(&grads).is_none(), "the teacher must be detached");
        let g = student.grad(&grads).unwrap().into_data().try_to_vec::<f32>().unwrap();
        let soft = |a: f32, b: f32| {
            let (x, y) = ((a / 3.0).exp(), (b / 3.0).exp());
            [x / (x + y), y / (x + y)]
        };
        let (q, p) = (soft(1.0, 0.0), soft(0.0, 2.0));
        for c in 0..2 {
            assert!((g[c] - 3.0 * (q[c] - p[c])).abs() < 1e-5, "{g:?}");
        }
    }
}
