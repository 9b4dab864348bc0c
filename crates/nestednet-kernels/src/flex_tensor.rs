//! Reading Flex's tensors from the kernels' backend-extension implementations.

use burn::backend::flex::FlexTensor;

/// A flex tensor in row-major order (copied only if its layout is not already that).
pub(crate) fn contiguous(tensor: FlexTensor) -> FlexTensor {
    if tensor.as_slice::<f32>().is_some() { tensor } else { tensor.to_contiguous() }
}

/// The dimensions of a 4-d flex tensor.
pub(crate) fn dims4(tensor: &FlexTensor) -> [usize; 4] {
    let shape = tensor.layout().shape();
    [shape[0], shape[1], shape[2], shape[3]]
}

/// The values of a contiguous `f32` flex tensor.
pub(crate) fn f32s(tensor: &FlexTensor) -> &[f32] {
    tensor.as_slice::<f32>().expect("a contiguous f32 tensor")
}
