//! Our dequantization of every block format against candle's, an independent implementation of
//! the same ggml layouts, on random blocks.
use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::Device;
use kernels::testing::{random_blocks, random_matrix};
use kernels::QuantType;

fn candle_dtype(ty: QuantType) -> GgmlDType {
    match ty {
        QuantType::F32 => GgmlDType::F32,
        QuantType::F16 => GgmlDType::F16,
        QuantType::Q4_0 => GgmlDType::Q4_0,
        QuantType::Q4_1 => GgmlDType::Q4_1,
        QuantType::Q5_0 => GgmlDType::Q5_0,
        QuantType::Q5_1 => GgmlDType::Q5_1,
        QuantType::Q8_0 => GgmlDType::Q8_0,
        QuantType::Q4K => GgmlDType::Q4K,
        QuantType::Q6K => GgmlDType::Q6K,
    }
}

#[test]
fn dequantize_row_matches_candle_for_every_format() {
    // 3 rows stay in rows; 32 go in strips where the path uses them.
    for (ty, rows) in QuantType::ALL.into_iter().flat_map(|t| [(t, 3), (t, 32)]) {
        let cols = 512;
        let w = random_matrix(ty, rows, cols, 7);
        let bytes = random_blocks(ty, rows, cols, 7);
        let storage = QStorage::from_data(bytes.into(), &Device::Cpu, candle_dtype(ty)).unwrap();
        let qt = QTensor::new(storage, (rows, cols)).unwrap();
        let want: Vec<f32> = qt
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let mut got = vec![0f32; cols];
        for r in 0..rows {
            w.dequantize_row(r, &mut got);
            for (k, (g, e)) in got.iter().zip(&want[r * cols..(r + 1) * cols]).enumerate() {
                assert_eq!(
                    g.to_bits(),
                    e.to_bits(),
                    "{ty:?} row {r} col {k}: {g} vs candle {e}"
                );
            }
        }
    }
}
